from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.errors import ApiError
from api.openapi import VISIBLE_TEXT
from assistant import faq, runtime
from retrieval.text import clean

router = APIRouter(prefix="/api/v1/faq", tags=["faq"])



class HitOut(BaseModel):
    faq_id: str
    question: str
    score: float


class SearchOut(BaseModel):
    query: str
    abstain: bool = Field(description="true when no entry answers the question well enough for the bot to answer it")
    decision: str = Field(description="answer | clarify | none")
    kb_version: str
    results: list[HitOut]


Question = Annotated[str, Query(min_length=1, max_length=2000, json_schema_extra={"pattern": VISIBLE_TEXT},
                                description="the question, in any of the supported languages")]


@router.get("/search", response_model=SearchOut)
async def search(q: Question, k: Annotated[int, Query(ge=1, le=22)] = 3):
    """Best FAQ entries for a question; `abstain` is true when none answers it well enough."""
    query = clean(q)
    if not query:
        raise ApiError(422, "empty_query", "q must contain some text")
    if not runtime.ready():
        raise ApiError(503, "not_ready", "the index is still loading", headers={"Retry-After": "5"})
    # A repeated question is answered from the retriever's result cache on the event loop: the
    # thread hand-off would cost more than the lookup.
    result = faq.cached(query, k) or await run_in_threadpool(faq.search, query, k)
    return {
        "query": q,
        "abstain": result.abstain,
        "decision": result.decision,
        "kb_version": result.kb_version,
        "results": [{"faq_id": h.faq_id, "question": h.question, "score": round(h.score, 4)}
                    for h in result.results],
    }
