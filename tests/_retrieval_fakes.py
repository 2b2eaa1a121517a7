"""Test doubles for retrieval tests: a hand-made KB and a deterministic encoder (not real data)."""
from __future__ import annotations

import hashlib

import numpy as np

from retrieval.types import FaqEntry, KnowledgeBase


def entry(id_, question, answer, alternates=(), question_en="", alternates_en=(), answer_en=""):
    section = id_.split(".")[0]
    return FaqEntry(id=id_, section=section, section_title=section, question=question,
                    answer=answer, title=question[:14], question_en=question_en or id_,
                    answer_en=answer_en or id_, alternates=tuple(alternates),
                    alternates_en=tuple(alternates_en))


def tiny_kb(version="v1") -> KnowledgeBase:
    return KnowledgeBase(entries=(
        entry("personal.screenshot", "健康码可以截图使用吗?", "不能。健康码有效期为1分钟。",
              ["健康码截屏能用吗", "打印的健康码有效吗", "把健康码拍下来给人看行不行"],
              "Can I use a screenshot of the health code?",
              ["Is a printed health code valid?", "screenshot of my code ok?"]),
        entry("personal.face_fail", "为什么L4人脸识别不通过?", "核对L3实名信息,切换支付宝登录。",
              ["刷脸一直失败怎么办", "人脸识别过不了", "L4认证刷脸不成功"],
              "Why does L4 face recognition fail?",
              ["face verification keeps failing", "face scan not working"]),
        entry("family.quota", "一个人能为几个家人申领健康码?", "最多8名家人:4名父母、3名子女和1名配偶。",
              ["最多能给几个家人申领", "为家人申领有数量限制吗", "能帮几个亲戚领码"],
              "How many family members can I apply for?",
              ["maximum number of family members", "how many relatives can I add"]),
        entry("overseas.foreign_passport", "持外国护照能否申领健康码?", "完成集中医学观察后可以申领境外入闽健康码。",
              ["外国护照可以申请健康码吗", "拿外国护照的人怎么领码", "护照是国外的能办吗"],
              "Can foreign passport holders apply for a health code?",
              ["I have a foreign passport, can I get a code?", "passport holder health code"]),
    ), version=version)


class FakeEncoder:
    """Hashed character-bigram vectors, L2-normalised: similar strings get similar vectors."""

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.calls: list[int] = []
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        t = text.lower()
        grams = [t[i:i + 2] for i in range(len(t) - 1)] or [t]
        for g in grams:
            h = int.from_bytes(hashlib.md5(g.encode()).digest()[:4], "little")
            v[h % self.dim] += 1.0
        v += 0.05   # a shared component, so cosines sit in a band like a real model's
        return v / np.linalg.norm(v)

    def encode_queries(self, texts):
        self.calls.append(len(texts))
        return np.stack([self._vec(t) for t in texts])

    def encode_passages(self, texts):
        return np.stack([self._vec(t) for t in texts])
