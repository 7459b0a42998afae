"""lm-eval hooks of the project-defined tasks (MKQA); the logic lives in langprune.evaluate.mkqa."""

import datasets

from langprune.evaluate.mkqa import best_f1, mkqa_docs

# Task language -> language key in the MKQA release.
MKQA_KEYS = {"ar": "ar", "de": "de", "en": "en", "es": "es", "ru": "ru", "zh": "zh_cn"}


def _docs_for(key):
    def process_docs(dataset):
        return datasets.Dataset.from_list(mkqa_docs(dataset, key))

    return process_docs


process_docs_ar, process_docs_de, process_docs_en, process_docs_es, process_docs_ru, process_docs_zh = (
    _docs_for(MKQA_KEYS[lang]) for lang in ("ar", "de", "en", "es", "ru", "zh"))


def process_results(doc, results):
    return {"f1": best_f1(results[0].strip(), doc["answers"], doc["lang"])}
