"""The one table of result keys: results in the task script's layout -> log keys, plain names and directions, and the
CLI's table from the same entries."""

from hf_unlearn.cli import format_table
from hf_unlearn.metrics.keys import SINGLE_SCORES, flatten_scores, score_label

RESULTS = {
    "forget-set": {"overall-regurgitation-score": 0.4, "overall-knowledge-score": None,
                   "Task2": {"regurgitation-score": 0.4, "knowledge-score": None}},
    "retain-set": {"overall-regurgitation-score": 0.9, "overall-knowledge-score": 1.0,
                   "Task2": {"regurgitation-score": 0.9, "knowledge-score": 1.0}},
    "harmonic-mean-task-aggregate": 0.7, "mia_loss_auc": 0.95, "mia_final_score": 0.1, "aggregate-score": -1,
}


def test_flatten_scores_maps_every_present_score_and_skips_missing_ones():
    flat = flatten_scores(RESULTS)
    assert flat == {"lume/forget/regurgitation": 0.4, "lume/forget/Task2/regurgitation": 0.4,
                    "lume/retain/regurgitation": 0.9, "lume/retain/knowledge": 1.0,
                    "lume/retain/Task2/regurgitation": 0.9, "lume/retain/Task2/knowledge": 1.0,
                    "lume/task_score": 0.7, "mia/auc": 0.95, "mia/score": 0.1}  # final score -1: not computed
    assert flatten_scores({**RESULTS, "aggregate-score": 0.5})["lume/final_score"] == 0.5


def test_labels_and_directions_come_from_the_table():
    assert score_label("lume/forget/Task2/regurgitation") == ("forget Task2 regurgitation (ROUGE-L)",
                                                              "lower is better")
    assert score_label("lume/retain/knowledge") == ("retain knowledge (exact match)", "higher is better")
    assert score_label("mia/auc") == ("MIA loss AUC", "0.5 is best")
    assert score_label("something/else") == ("something/else", None)
    assert len({s.log_key for s in SINGLE_SCORES}) == len({s.result_key for s in SINGLE_SCORES}) == len(SINGLE_SCORES)


def test_the_cli_table_prints_the_tables_labels():
    table = format_table(RESULTS)
    assert "task score" in table and "MIA loss AUC                 0.9500" in table and "final score" not in table
    assert "forget   Task2          0.4000          -" in table


def test_tables_show_scores_in_one_order_with_the_tables_labels():
    from hf_unlearn.support.demo import format_before_after
    from hf_unlearn.metrics.keys import table_order

    flat = flatten_scores({**RESULTS, "aggregate-score": 0.5})
    shuffled = dict(reversed(list({**flat, "epoch": 3.0, "loss": 0.1}.items())))
    assert table_order(shuffled) == [
        "lume/forget/regurgitation", "lume/retain/regurgitation", "lume/retain/knowledge",
        "lume/forget/Task2/regurgitation", "lume/retain/Task2/regurgitation", "lume/retain/Task2/knowledge",
        "lume/task_score", "mia/auc", "mia/score", "lume/final_score"]
    table = format_before_after(flat, {"lume/forget/regurgitation": 0.1})
    assert table.splitlines()[2] == "| forget regurgitation (ROUGE-L) | 0.400 | 0.100 |"
    assert "| MIA loss AUC | 0.950 | - |" in table and "epoch" not in table
