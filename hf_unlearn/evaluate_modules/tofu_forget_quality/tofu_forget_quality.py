"""TOFU's forget quality: the p-value of the two-sample KS test between the unlearned model's truth ratios on the
forget questions and a retain model's on the same questions (`hf_unlearn.metrics.tofu.forget_quality`), as an
`evaluate` module; with the model utility terms given, model utility too."""

import datasets
import evaluate

from hf_unlearn.metrics.tofu import forget_quality, truth_ratio_score

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: the unlearned model's truth ratio of each forget question.
    references: the retain model's truth ratio of the same question.
Returns:
    forget_quality (the KS test's p-value) and truth_ratio (mean max(0, 1 - R) of the predictions).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TofuForgetQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs (arXiv:2401.06121)",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        return {"forget_quality": forget_quality(predictions, references),
                "truth_ratio": truth_ratio_score(predictions)}
