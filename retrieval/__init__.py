"""FAQ retrieval: KB parsing, jieba BM25 + dense e5 vectors in faiss, fused score, abstain decision.

No Rasa imports: the bot's actions and the API both call into this package.
"""
