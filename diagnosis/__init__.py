"""The user's own account: the document's declaration, the diagnosis rules and their replies.

Pure code: no Rasa, database or HTTP imports, nothing loaded at import time. Storage and the API
reuse `diagnosis.account.Account` as the one declaration of the account document.
"""
