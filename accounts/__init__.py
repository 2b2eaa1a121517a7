"""Account state and who may see it: the account source, user sessions, agent tokens, the read audit.

    source.py    AccountSource: SqlAccountStore (built-in table) or HttpAccountSource (upstream)
    sessions.py  user session tokens and agent tokens: random, stored as SHA-256, sessions expire
    audit.py     one account_reads row per read (actor, time, user, hashed conversation, purpose)
    service.py   what callers use: put_account, read_account_for (audited), sessions, agents

No Rasa imports: the bot's actions and the API routes both call service.py. Nothing connects at
import time; the database is the process's shared one (store.default_sessions) unless
`service.configure()` points elsewhere.
"""
