"""Conversation services the bot's actions and the API call: one function per job, no Rasa imports."""
