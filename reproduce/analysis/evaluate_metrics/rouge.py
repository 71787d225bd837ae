"""ROUGE-1/2/L F-measures per example on Google's rouge-score, with the suite's settings (Porter stemming,
rouge-score's default tokenizer): the numbers reproduce.analysis.metrics.rouge_scores gives.

Unlike the hub's `rouge`, it returns one value per example and never aggregates: the analysis pairs examples
across methods and bootstraps the means itself."""

import datasets
import evaluate
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str, one per prediction; "
                               "rouge_types: which ROUGE variants (default rouge1, rouge2, rougeL); "
                               "use_stemmer: Porter stemming (default True). "
                               "Returns {rouge_type: [F-measure per example]}.",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, rouge_types=ROUGE_TYPES, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer)
        scores = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
        return {name: [s[name].fmeasure for s in scores] for name in rouge_types}
