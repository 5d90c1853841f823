"""LIBU with `InfluenceUnlearningTrainer`: one influence step (the forget-NLL gradient preconditioned by the retain
set's diagonal Fisher), then Sophia fine-tuning on gradient difference. Data, model, LUME callbacks and merging are
run_npo.py's; this script only swaps the config and the trainer.

A real model, the paper's third ("conservative") setup, scored every epoch:

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/run_influence.py \
        --model_name_or_path allenai/OLMo-1B-0724-hf \
        --dataset llmunlearningsemeval2025organization/semeval25-unlearning-dataset-public \
        --use_peft --lora_r 5 --lora_alpha 5 --lora_target_modules all-linear \
        --learning_rate 2e-5 --damping 1e-3 --sophia_rho 0.04 --hessian_interval 10 \
        --per_device_train_batch_size 4 --num_train_epochs 5 --output_dir olmo1b-libu \
        --eval_data ../shared/data/lume --mia_dir ../shared/data/lume/mia --eval_every 1

Offline on a CPU, on the small model that `run_npo.py --dataset ../shared/data/lume --num_rows 16 ... --output_dir
outputs/npo` memorised and saved (without --model_name_or_path this script builds and memorises one itself):

    python examples/run_influence.py --model_name_or_path outputs/npo/base_model --dataset ../shared/data/lume \
        --num_rows 16 --use_peft --lora_r 8 --lora_alpha 8 --lora_target_modules all-linear --influence_lr 5 \
        --learning_rate 1e-3 --retain_nll_weight 3 --max_steps 20 --report_to none --output_dir outputs/libu

It prints the influence step's forget and retain NLL (0.015 -> 0.318 and 0.013 -> 0.157), then the answer NLL before
and after the whole run (forget 0.015 -> 1.273, retain 0.013 -> 0.075). `--influence_lr 5`: the step is
`influence_lr * g_f / (F + damping)`, and on a model that has memorised its rows both the forget gradient and the
Fisher are tiny, so at the default (the learning rate, 1e-3) it changes the forget NLL by less than 0.001.

The influence step and Sophia's Hessian refresh read the model's own parameters: use a single process or DDP
(accelerate_configs/multi_gpu.yaml, multi_cpu.yaml), not DeepSpeed or FSDP. `--help` lists every option.
"""

from __future__ import annotations

from run_npo import (
    ScriptArguments,
    add_evaluation,
    answer_nll,
    load_data,
    load_model,
    report_answer_nll,
    save_and_merge,
)
from trl import ModelConfig, TrlParser, get_peft_config

from hf_unlearn import InfluenceUnlearningConfig, InfluenceUnlearningTrainer
from hf_unlearn.quiet import hide_known_noise
from hf_unlearn.threads import configure_threads


def main(script_args: ScriptArguments, training_args: InfluenceUnlearningConfig, model_args: ModelConfig) -> None:
    if not script_args.dataset:
        raise SystemExit("--dataset is required: a LUME folder or Hub dataset id (see the docstring's commands).")
    forget, retain = load_data(script_args)
    model, tokenizer = load_model(script_args, model_args, forget, retain, training_args.output_dir)
    before = {"forget": answer_nll(model, tokenizer, forget), "retain": answer_nll(model, tokenizer, retain)}
    trainer = InfluenceUnlearningTrainer(
        model=model,
        args=training_args,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    add_evaluation(trainer, script_args)
    trainer.train()
    if trainer.accelerator.is_main_process:
        influence = next((e for e in trainer.state.log_history if "influence/update_norm" in e), {})
        nll = {key: influence.get(f"influence/{key}", float("nan")) for key in
               ("forget_nll_before", "forget_nll_after", "retain_nll_before", "retain_nll_after")}
        print(f"\ninfluence step: forget NLL {nll['forget_nll_before']:.3f} -> {nll['forget_nll_after']:.3f}, "
              f"retain NLL {nll['retain_nll_before']:.3f} -> {nll['retain_nll_after']:.3f}")
    report_answer_nll(trainer, tokenizer, forget, retain, before)
    save_and_merge(trainer, script_args, training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # and destroys the process group, so no process hangs at exit


if __name__ == "__main__":
    hide_known_noise()
    configure_threads()  # one per free core, unless OMP_NUM_THREADS (accelerate launch sets it) says otherwise
    parser = TrlParser((ScriptArguments, InfluenceUnlearningConfig, ModelConfig))
    main(*parser.parse_args_and_config())
