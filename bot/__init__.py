"""Rasa project: NLU data, rules, domain, the custom input channel and the action handlers."""
