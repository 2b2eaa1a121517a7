"""Rasa's LogisticRegressionClassifier with a cheaper feature matrix: the same classifier, the same X.

Rasa builds each message's row by combining the featurizers' outputs with scipy's hstack (after a
deepcopy of the first), the sequence features too although the classifier reads only sentence
features, then hstacks the sparse and dense halves and vstacks the rows: on one short message
that was ~1.5 ms, most of the classifier's time and ~12 % of a whole Rasa turn. Here the rows are
written straight into one CSR matrix, in Rasa's column order (sparse sentence features in
pipeline order, then dense ones), canonical like scipy's result, so training and prediction see
exactly the matrix they saw before (tests/rasa_side/checks.py compares the two).
"""
from __future__ import annotations

from typing import List

import numpy as np
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, TEXT
from rasa.shared.nlu.training_data.message import Message
from scipy.sparse import csr_matrix


def sentence_features(message: Message) -> list:
    """The matrices Rasa's classifier row is made of, in its order: sparse first, then dense."""
    found = [f for f in message.features if f.attribute == TEXT and f.type == FEATURE_TYPE_SENTENCE]
    return [f.features for f in found if f.is_sparse()] + [f.features for f in found if f.is_dense()]


def feature_matrix(messages: List[Message]) -> csr_matrix:
    data: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    indptr = [0]
    width = 0
    dtypes = []
    for message in messages:
        offset = 0
        count = indptr[-1]
        for part in sentence_features(message):
            if hasattr(part, "tocoo"):
                coo = part.tocoo()
                values, cols = coo.data, coo.col
            else:
                row = np.asarray(part).reshape(-1)
                cols = np.flatnonzero(row)          # csr_matrix(dense) keeps no zeros either
                values = row[cols]
            data.append(values)
            columns.append(cols.astype(np.int64) + offset)
            dtypes.append(values.dtype)
            count += len(values)
            offset += part.shape[-1]
        indptr.append(count)
        width = max(width, offset)
    dtype = np.result_type(*dtypes) if dtypes else np.float64
    matrix = csr_matrix((np.concatenate(data).astype(dtype) if data else np.zeros(0, dtype),
                         np.concatenate(columns) if columns else np.zeros(0, np.int64),
                         np.asarray(indptr)), shape=(len(messages), width))
    matrix.sum_duplicates()     # canonical (sorted, no duplicates), as scipy's hstack leaves it
    return matrix


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class FastLogisticRegressionClassifier(LogisticRegressionClassifier):
    def _create_X(self, messages: List[Message]) -> csr_matrix:
        return feature_matrix(messages)
