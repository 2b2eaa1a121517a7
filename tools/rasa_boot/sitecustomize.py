"""Rasa server start-up, ~3x faster: imported by the Rasa server's Python because tools/run_stack.py
(and deploy/systemd/hc-rasa@.service) put this directory on its PYTHONPATH. Nothing else uses it.

Why. A restarted Rasa server is the longest gap a `kill -9` leaves (the app answers chat with
503 meanwhile). Two thirds of its start-up is RasaModel.load (rasa/utils/tensorflow/models.py,
Rasa 3.6): to create the model's weights before `load_weights`, it fits the model on one example,
and that fit runs as a traced tf.function: the whole training-step graph is built (~18 s of ~27 s
on two cores) to be run once and thrown away. Here that one-example fit runs eagerly instead
(the same layers, weights and optimizer slots get created, only without the graph), then the model
is put back in the mode its config asks for before `load_weights` and before Rasa traces its
prediction function: the weights, the predict graph and so every prediction are the ones Rasa's
own load gives (checked: the same intents and confidences for every KB question).

Applied only to Rasa 3.6 (the method it replaces is that version's); HC_RASA_FAST_LOAD=0 turns it
off. The patch is installed lazily, when Rasa imports rasa.utils.tensorflow.models.

Also for a model without DIET (bot/config.yml's LogisticRegressionClassifier, loaded with skops):
skops.io is imported first thing, while sys.modules is small. Its import scans sys.modules once
per trusted sklearn type (skops/io/_trusted_types.py): ~8 s once Rasa and TensorFlow are loaded,
~2 s before them (measured in the Rasa venv), so the server answers ~6 s sooner.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys

TARGET = "rasa.utils.tensorflow.models"
log = logging.getLogger("hc.rasa_boot")


def _fast_load(models) -> None:
    import rasa

    if not rasa.__version__.startswith("3.6."):
        log.warning("rasa %s: not patching RasaModel.load (written for 3.6)", rasa.__version__)
        return
    import tensorflow as tf
    from rasa.utils.tensorflow.constants import LEARNING_RATE, RUN_EAGERLY
    from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator

    RasaModel = models.RasaModel
    if getattr(RasaModel, "_hc_fast_load", False):
        return

    @classmethod
    def load(cls, model_file_name, model_data_example, predict_data_example=None, finetune_mode=False,
             *args, **kwargs):
        # Rasa 3.6's RasaModel.load, but for the eager one-example fit.
        model = cls(*args, **kwargs)
        config = kwargs.get("config", {})
        learning_rate = config.get(LEARNING_RATE, 0.001)
        run_eagerly = config.get(RUN_EAGERLY)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), run_eagerly=True)
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        model.run_eagerly = run_eagerly          # back to what Rasa's own load compiles with
        model.load_weights(model_file_name)
        if not finetune_mode and predict_data_example:
            model.run_inference(predict_data_example)
        return model

    RasaModel.load = load
    RasaModel._hc_fast_load = True


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds TARGET with the normal finders, runs its module, then patches it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        try:
            _fast_load(module)
        except Exception:       # never stop Rasa from starting: its own load still works
            log.exception("could not patch RasaModel.load; Rasa loads its model the usual way")


def _import_skops_early() -> None:
    try:
        import skops.io  # noqa: F401  (see the module docstring)
    except Exception:       # no skops (or a broken one): Rasa imports it itself if a model needs it
        log.debug("skops.io not imported early", exc_info=True)


if os.environ.get("HC_RASA_FAST_LOAD", "1").strip().lower() not in ("0", "false", "no"):
    sys.meta_path.insert(0, _AfterImport())
    _import_skops_early()
