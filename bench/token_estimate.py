"""How good is the offline token estimate (``llm_gateway.tokens``)? Measured, not assumed.

Everything here runs offline. It measures two things on a sample of text of four kinds
(English prose, Python code, JSON, eight other languages):

1. Implementation check: ``tokens.estimate_tokens`` (bpe-openai's Rust BPE over the
   o200k_base ranks shipped in its wheel) against tiktoken (OpenAI's own implementation)
   loaded with the *same* ranks from the bpe-openai package, so no download. Agreement
   means the estimate is OpenAI's exact count for o200k models (gpt-4o, gpt-4.1, o-series).
2. Tokenizer spread: o200k_base against cl100k_base (gpt-4 / gpt-3.5). Claude, Gemini and
   Mistral use their own tokenizers, which cannot be loaded offline; the spread between two
   real BPE vocabularies of different sizes is the best offline proxy for how far another
   vendor's count can be from ours.

Run: ``.venv/bin/python bench/token_estimate.py`` (prints a Markdown table).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_gateway.tokens import estimate_tokens  # noqa: E402

MULTILINGUAL = {
    "fr": "Le service renvoie une erreur lorsque la clé d'API est absente ; vérifiez la configuration "
          "avant de relancer la requête. Les coûts sont calculés à partir du nombre de jetons.",
    "de": "Die Anfrage wurde abgelehnt, weil das Tagesbudget des Mandanten überschritten wäre. "
          "Bitte verringern Sie max_tokens oder wählen Sie ein günstigeres Modell.",
    "es": "El modelo respondió con un texto truncado porque alcanzó el límite de tokens de salida; "
          "aumente max_tokens si necesita una respuesta completa.",
    "ru": "Шлюз повторяет запрос с экспоненциальной задержкой, если поставщик возвращает ошибку 429 "
          "или 503, и переходит к следующей модели после исчерпания попыток.",
    "zh": "网关在每个请求结束时记录租户、模型、令牌数量和费用，并且从不保存提示词或回答的文本。",
    "ja": "ゲートウェイは各リクエストの終了時に、テナント、モデル、トークン数、費用を記録します。",
    "ar": "يسجل البوابة المستأجر والنموذج وعدد الرموز والتكلفة عند انتهاء كل طلب.",
    "hi": "गेटवे हर अनुरोध के अंत में किरायेदार, मॉडल, टोकन की संख्या और लागत दर्ज करता है।",
}


def samples() -> dict[str, list[str]]:
    site = Path(sys.prefix) / "lib"
    licenses = sorted(p for p in site.glob("python3*/site-packages/*.dist-info/LICENSE*") if p.is_file())[:20]
    prose = [p.read_text("utf-8", "replace") for p in licenses]
    prose += [p.read_text("utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    code = [p.read_text("utf-8") for p in sorted((ROOT / "llm_gateway").rglob("*.py"))]
    js = [p.read_text("utf-8") for p in sorted((ROOT / "tests" / "unit" / "golden").rglob("*.json"))]
    return {"English prose": prose, "Python code": code, "JSON": js, "8 other languages": list(MULTILINGUAL.values())}


def tiktoken_from_package(name: str):
    import tiktoken
    from bpe_openai import registry

    spec = getattr(registry, name)()
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=spec["mergeable_ranks"],
                             special_tokens=spec["special_tokens"])


def main() -> None:
    import bpe_openai

    tt_o200k = tiktoken_from_package("o200k_base")
    cl100k = bpe_openai.get_encoding("cl100k_base")
    print("| sample | texts | chars | ours (o200k) | tiktoken o200k | mismatching texts | cl100k | cl100k / o200k |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, texts in samples().items():
        ours = [estimate_tokens(t) for t in texts]
        ref = [len(tt_o200k.encode(t, disallowed_special=())) for t in texts]
        cl = [len(cl100k.encode(t)) for t in texts]
        mism = sum(a != b for a, b in zip(ours, ref, strict=True))
        chars = sum(len(t) for t in texts)
        print(f"| {kind} | {len(texts)} | {chars} | {sum(ours)} | {sum(ref)} | {mism} | {sum(cl)} | "
              f"{sum(cl) / max(1, sum(ours)):.3f} |")
    worst = max(((len(cl100k.encode(t)) / max(1, estimate_tokens(t))), k) for k, t in MULTILINGUAL.items())
    print(f"\nlargest single-text spread (cl100k / o200k): {worst[0]:.2f} ({worst[1]})")


if __name__ == "__main__":
    main()
