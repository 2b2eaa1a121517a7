"""NLU component: the message metadata's `lang` becomes an entity, which fills slot `lang`.

The app sends the user's language with every message. Filling the slot used to take a call of
`action_validate_slot_mappings` back to the action server on every turn (an HTTP round trip
and a tracker serialisation, for one string); an entity lets Rasa's own from_entity mapping
fill it inside the NLU step, with no call at all.
"""
from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, METADATA
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from .lang import lang_entity


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class LangFromMetadata(GraphComponent):
    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "LangFromMetadata":
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            entity = lang_entity(message.get(METADATA))
            if entity is not None:
                message.set(ENTITIES, [*message.get(ENTITIES, []), entity], add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data   # training examples carry no metadata: nothing to add
