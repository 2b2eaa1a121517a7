"""Custom Rasa NLU components (loaded by the Rasa server from bot/, never by the app)."""
