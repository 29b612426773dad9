#!/usr/bin/env python3
"""Generate golden reference values for the Rust (Burn) MiniLM text encoder
and WordPiece tokenizer, using HuggingFace transformers as the reference.

This script is NOT run by CI; its outputs are committed next to it:

  trainer/tests/golden/minilm_hidden.safetensors   hidden states of a padded batch
  trainer/tests/golden/wordpiece_golden.json       tokenizer ids/tokens of real alt texts

Inputs (produced by `scripts/fetch-assets`, read from the local disk only,
nothing is downloaded at run time):

  assets/minilm/{model.safetensors,config.json,vocab.txt,tokenizer.json,
                 tokenizer_config.json,special_tokens_map.json}
  assets/commoncrawl/CC-MAIN-20140820021334-00006.warc{,.wat,.wet}

How to regenerate (from the repository root, on any x86_64 Linux CPU box;
no GPU is needed or used):

  python3 -m venv /tmp/hfgold-venv
  /tmp/hfgold-venv/bin/pip install torch==2.5.1 transformers==4.46.3 \
      tokenizers==0.20.3 safetensors==0.4.5 numpy==2.1.3
  scripts/fetch-assets            # if assets/ is not populated yet
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      /tmp/hfgold-venv/bin/python trainer/tests/golden/make_minilm_golden.py

(Python 3.11 was used. The torch wheel from the package index pulls the
nvidia-* CUDA wheels as dependencies; they are unused here.)

The model runs on CPU in float32, in eval mode (no dropout), with
torch.manual_seed(0) and torch.set_num_threads(2), and with the "eager"
attention implementation (plain softmax(QK^T/sqrt(d) + mask) V), which is the
formulation the Rust port implements.
"""

import html.parser
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertModel, BertTokenizer, BertTokenizerFast  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = REPO / "assets" / "minilm"
CC_DIR = REPO / "assets" / "commoncrawl"
CC_BASE = "CC-MAIN-20140820021334-00006.warc"
OUT_DIR = Path(__file__).resolve().parent

# The padded batch for the hidden-state golden. Real alt/title texts from the
# Common Crawl fixtures plus one COCO-style caption; deliberately of different
# lengths so that three of the four rows carry [PAD] positions.
HIDDEN_SENTENCES = [
    ("A man riding a motorcycle on a dirt road.", "hand (COCO-style caption)"),
    ("Creative Commons License", "wat:img_alt"),
    ("Should the browser remember your name?", "wat:link_title"),
    ("Powered by Semantic MediaWiki", "warc:img_alt"),
]

# Hand-picked hard cases for the WordPiece port.
HARD_CASES = [
    "Café déjà vu",
    "naïve façade, São Paulo, Zürich, Ångström, résumé",
    "東京タワーの夜景",
    "我爱北京天安门",
    "한국어 텍스트 and 日本語 mixed with English",
    "Wait... what?!?! -- (really) [sic] {ok} <tag> ***",
    "See /photos/?gallery=Thailand%202011-01&photo=726#top or ./img-496.jpg, mail me@host",
    "Population: 1,234,567 people; price $3.99 (€2,50) on 2014-08-21 at 12:30",
    "Sunset 🌅 at the beach 🏖️ with friends 👨‍👩‍👧",
    "iPhone McDonald's NASA eBay YouTube CamelCaseWord",
    "a" * 101,
    "Pneumonoultramicroscopicsilicovolcanoconiosis and "
    + "supercalifragilisticexpialidocious" * 3,
    "tab\there\nnew line\r\ncarriage\u00a0nbsp\u200bzero-width\u0000nul\u0007bell\ufffdrepl",
    "don't can't won't it's O'Neill rock 'n' roll ‘curly’ “quotes”",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and ﬁ ligature, x² ½ Ⅻ",
    "Ελληνικά, Русский текст, العربية, עברית, हिन्दी",
    "   leading and trailing spaces   ",
    "",
    # > 128 tokens: tokenizer.json carries truncation max_length=128, which
    # must NOT apply here (the golden is generated with truncation=False).
    " ".join(["This work is licensed under a Creative Commons "
              "Attribution-ShareAlike 3.0 License."] * 10),
]


# --------------------------------------------------------------------------
# WARC reading
# --------------------------------------------------------------------------
def warc_records(path):
    """Yield (headers: dict, payload: bytes) for each record of an
    uncompressed WARC/WAT/WET file."""
    data = path.read_bytes()
    pos = 0
    while True:
        start = data.find(b"WARC/1.0\r\n", pos)
        if start < 0:
            return
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            return
        headers = {}
        for line in data[start:end].decode("utf-8", "replace").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        body_start = end + 4
        payload = data[body_start : body_start + length]
        pos = body_start + length
        yield headers, payload


def wat_texts():
    """alt texts of IMG links and title attributes of any link, in order."""
    out = []
    n_img_alt = 0
    for headers, payload in warc_records(CC_DIR / (CC_BASE + ".wat")):
        if not headers.get("content-type", "").startswith("application/json"):
            continue
        try:
            j = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            continue
        hm = (
            j.get("Envelope", {})
            .get("Payload-Metadata", {})
            .get("HTTP-Response-Metadata", {})
            .get("HTML-Metadata", {})
        )
        for link in hm.get("Links", []):
            path = link.get("path", "")
            if path.startswith("IMG@") and link.get("alt", "").strip():
                out.append((link["alt"], "wat:img_alt"))
                n_img_alt += 1
            if link.get("title", "").strip():
                src = "wat:img_title" if path.startswith("IMG@") else "wat:link_title"
                out.append((link["title"], src))
    return out, n_img_alt


class _AttrCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and (a.get("alt") or "").strip():
            self.found.append((a["alt"], "warc:img_alt"))
        if (a.get("title") or "").strip():
            src = "warc:img_title" if tag == "img" else "warc:title_attr"
            self.found.append((a["title"], src))

    handle_startendtag = handle_starttag


def warc_html_texts():
    out = []
    for headers, payload in warc_records(CC_DIR / CC_BASE):
        if headers.get("warc-type") != "response":
            continue
        split = payload.find(b"\r\n\r\n")
        body = payload[split + 4 :] if split >= 0 else payload
        p = _AttrCollector()
        p.feed(body.decode("utf-8", "replace"))
        p.close()
        out.extend(p.found)
    return out


def wet_lines():
    out = []
    for headers, payload in warc_records(CC_DIR / (CC_BASE + ".wet")):
        if headers.get("warc-type") != "conversion":
            continue
        for line in payload.decode("utf-8", "replace").splitlines():
            if line.strip():
                out.append((line, "wet:line"))
    return out


_URL_RE = re.compile(r"://|\bwww\.", re.IGNORECASE)


def dedupe(items, seen, max_per_shape=None):
    """Drop exact duplicates (across all sources, first wins). With
    max_per_shape, also keep at most that many texts per digit-normalised
    shape (the WARC has ~850 alts of the form "photo No. N")."""
    shapes = {}
    out = []
    for text, src in items:
        if not text.strip() or text in seen:
            continue
        if _URL_RE.search(text):
            # Texts holding a web address are left out: this repository
            # keeps no URLs in its files. The hand cases cover URL-like paths.
            continue
        if max_per_shape is not None:
            shape = re.sub(r"\d+", "0", text)
            shapes[shape] = shapes.get(shape, 0) + 1
            if shapes[shape] > max_per_shape:
                continue
        seen.add(text)
        out.append((text, src))
    return out


# --------------------------------------------------------------------------
def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)

    fast = BertTokenizerFast.from_pretrained(str(MODEL_DIR), local_files_only=True)
    slow = BertTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)
    norm = json.loads(fast.backend_tokenizer.normalizer.__getstate__())
    model_json = json.loads(fast.backend_tokenizer.to_str())["model"]

    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }

    # ---------------------------------------------------------- wordpiece
    seen = set()
    wat, n_wat_img_alt = wat_texts()
    entries = dedupe(wat, seen)
    n_wat = len(entries)
    entries += dedupe(warc_html_texts(), seen, max_per_shape=3)
    entries += dedupe(wet_lines(), seen)
    n_real = len(entries)
    entries += [(t, "hand") for t in HARD_CASES]

    assert len(fast(HARD_CASES[-1])["input_ids"]) > 128
    cases = []
    mismatches = []
    for text, src in entries:
        enc = fast(text, add_special_tokens=True, truncation=False, padding=False)
        ids = list(enc["input_ids"])
        toks = fast.convert_ids_to_tokens(ids)
        slow_ids = slow(text, add_special_tokens=True, truncation=False)["input_ids"]
        if slow_ids != ids:
            mismatches.append(text)
        cases.append({"source": src, "text": text, "input_ids": ids, "tokens": toks})

    tok_cfg = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    wordpiece = {
        "description": "HF BertTokenizerFast output on real Common Crawl alt/title "
        "texts (assets/commoncrawl) plus hand-picked hard cases; "
        "add_special_tokens=True, no truncation, no padding.",
        "generator": "trainer/tests/golden/make_minilm_golden.py",
        "versions": versions,
        "tokenizer": {
            "class": type(fast).__name__,
            "do_lower_case": fast.do_lower_case,
            "strip_accents": norm.get("strip_accents"),
            "strip_accents_effective": (
                norm.get("strip_accents")
                if norm.get("strip_accents") is not None
                else bool(norm.get("lowercase"))
            ),
            "strip_accents_note": "null means: follow lowercase (BERT rule), "
            "so accents ARE stripped for this uncased model",
            "tokenize_chinese_chars": tok_cfg.get("tokenize_chinese_chars"),
            "normalizer": norm,
            "max_input_chars_per_word": model_json.get("max_input_chars_per_word"),
            "continuing_subword_prefix": model_json.get("continuing_subword_prefix"),
            "unk_token": fast.unk_token,
            "special_ids": {
                t: fast.convert_tokens_to_ids(t)
                for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            },
            "vocab_size": fast.vocab_size,
            "slow_tokenizer_disagrees_on": mismatches,
        },
        "counts": {
            "wat_img_alt": n_wat_img_alt,
            "wat_texts_deduped": n_wat,
            "real_texts_total": n_real,
            "hand_cases": len(HARD_CASES),
        },
        "cases": cases,
    }
    wp_path = OUT_DIR / "wordpiece_golden.json"
    with open(wp_path, "w", encoding="utf-8") as f:
        json.dump(wordpiece, f, ensure_ascii=False, indent=1)
        f.write("\n")

    # ------------------------------------------------------ hidden states
    model = BertModel.from_pretrained(
        str(MODEL_DIR),
        local_files_only=True,
        attn_implementation="eager",
        torch_dtype=torch.float32,
    )
    model.eval()
    assert not model.training

    texts = [t for t, _ in HIDDEN_SENTENCES]
    batch = fast(texts, padding=True, truncation=False, return_tensors="pt")
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        output_hidden_states=True,
        return_dict=True,
    )
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1

    # Padding invariance: each row run alone (no padding) must match the
    # valid positions of the padded batch.
    pad_diff = 0.0
    for b, text in enumerate(texts):
        single = fast(text, return_tensors="pt")
        n = single["input_ids"].shape[1]
        ref = model(**single).last_hidden_state[0]
        d = (ref - out.last_hidden_state[b, :n]).abs().max().item()
        pad_diff = max(pad_diff, d)
    assert pad_diff < 1e-5, pad_diff

    tensors = {
        "input_ids": batch["input_ids"].numpy().astype(np.int64),
        "attention_mask": batch["attention_mask"].numpy().astype(np.int64),
        "token_type_ids": batch["token_type_ids"].numpy().astype(np.int64),
    }
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_{i}"] = h.float().numpy().copy()
    tensors["last_hidden_state"] = out.last_hidden_state.float().numpy().copy()

    from safetensors import safe_open

    with safe_open(str(MODEL_DIR / "model.safetensors"), "np") as f:
        has_pooler = any(k.startswith("pooler.") for k in f.keys())
    if has_pooler:
        tensors["pooler_output"] = out.pooler_output.float().numpy().copy()
    else:
        print("checkpoint has no pooler weights: pooler_output skipped")

    meta = {
        "generator": "trainer/tests/golden/make_minilm_golden.py",
        "model": "assets/minilm (nreimers/MiniLM-L6-H384-uncased)",
        "sentences": json.dumps(HIDDEN_SENTENCES, ensure_ascii=False),
        "attn_implementation": "eager",
        "dtype": "float32",
        "device": "cpu",
        "hidden_0": "embeddings output after LayerNorm (word+position+token_type)",
        "tolerance_abs": "1e-4",
        "versions": json.dumps(versions),
    }
    hs_path = OUT_DIR / "minilm_hidden.safetensors"
    safetensors.numpy.save_file(tensors, str(hs_path), metadata=meta)

    # ------------------------------------------------------------ checks
    back = safetensors.numpy.load_file(str(hs_path))
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    np.testing.assert_array_equal(back["hidden_6"], back["last_hidden_state"])
    json.loads(wp_path.read_text(encoding="utf-8"))

    print("versions:", versions)
    print(f"{hs_path.relative_to(REPO)}: {hs_path.stat().st_size} bytes")
    for k, v in back.items():
        print(f"  {k:18s} {str(v.dtype):8s} {list(v.shape)}")
    print(f"{wp_path.relative_to(REPO)}: {wp_path.stat().st_size} bytes, "
          f"{len(cases)} cases ({n_real} real, {len(HARD_CASES)} hand); "
          f"WAT img alts: {n_wat_img_alt}, WAT texts (alt+title, deduped): {n_wat}")
    print(f"padded-vs-unpadded max abs diff (valid positions): {pad_diff:.2e}")
    if mismatches:
        print("slow/fast tokenizer disagree on:", mismatches)


if __name__ == "__main__":
    main()
