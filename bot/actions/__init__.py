"""Custom actions, served by the app process through rasa_sdk's ActionExecutor.

Actions stay thin: read slots and the message, call one service in `assistant`, dispatch
its Reply, return events. They import rasa_sdk and the plain packages, never `rasa`.
"""
