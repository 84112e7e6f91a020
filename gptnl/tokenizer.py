"""Train and load the Dutch byte-level BPE tokenizer, written as Hugging Face files.

Byte-level BPE never meets an unknown character; NFC first so that "é" typed two ways is one
token sequence; digits are split one by one so numbers (postcodes, amounts, dates) do not eat
vocabulary. The folder loads unchanged in `transformers.AutoTokenizer` and therefore in vLLM,
which renders the same chat template at serving time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from gptnl.artefacts import TokenizerInputs, TokenizerManifest, TokenizerOutputs, write_manifest
from gptnl.config.pack import TOKENIZER
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_text

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# Each turn: role marker, newline, content, <|end|>, newline. `add_generation_prompt` opens an
# assistant turn; generation stops at <|end|> (listed as an eos id in generation_config.json). The
# `generation` block marks what the assistant says, so `return_assistant_tokens_mask` (TRL, and our
# tests) find the tokens that carry the loss; it renders nothing itself.
#
# Tools (docs/serving.md, "Tools and structured output") use the Hermes format that vLLM's `hermes`
# tool-call parser reads, with the role markers we already have, so no tokenizer needs new tokens:
# - `tools` given: a system turn (the conversation's own system message, then a blank line) lists each
#   function's JSON schema between <tools></tools> and says how to call one;
# - an assistant turn with `tool_calls`: its content (if any) and a newline, then per call
#   `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (calls joined by a newline),
#   all inside the `generation` block, then <|end|>;
# - consecutive `tool` messages: one user turn, each result between <tool_response name="..."> and
#   </tool_response> (the name is the called function's, found through `tool_call_id`), joined by a
#   newline.
# A conversation without tools, tool calls or tool messages renders exactly as before tools existed.
TOOLS_INTRO = ("# Functies\n\nJe kunt functies aanroepen. Hun beschrijvingen staan als JSON tussen "
               "<tools></tools>:\n<tools>")
TOOLS_OUTRO = ("\n</tools>\n\nRoep een functie aan met een JSON-object met de naam en de argumenten tussen "
               "<tool_call></tool_call>:\n<tool_call>\n{\"name\": <functienaam>, \"arguments\": <argumenten als "
               "JSON-object>}\n</tool_call>\nWat een functie teruggeeft, staat tussen <tool_response></tool_response>.")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set first = 0 %}"
    "{% if tools %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first = 1 %}{{ '<|system|>\n' ~ messages[0]['content'] ~ '\n\n' }}"
    "{% else %}{{ '<|system|>\n' }}{% endif %}"
    "{{ '" + TOOLS_INTRO + "' }}"
    "{% for tool in tools %}"
    "{{ '\n' ~ ((tool['function'] if tool['function'] is defined else tool) | tojson) }}"
    "{% endfor %}"
    "{{ '" + TOOLS_OUTRO + "<|end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ '; allowed: system, user, assistant, tool') }}"
    "{% endif %}"
    "{% if loop.index0 < first %}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|assistant|>\n' }}{% generation %}"
    "{% if message['content'] %}{{ message['content'] ~ '\n' }}{% endif %}"
    "{% for call in message['tool_calls'] %}"
    "{% set f = call['function'] if call['function'] is defined else call %}"
    "{{ ('\n' if not loop.first else '') ~ '<tool_call>\n' }}"
    "{% if f['arguments'] is string %}"
    "{{ '{\"name\": ' ~ (f['name'] | tojson) ~ ', \"arguments\": ' ~ f['arguments'] ~ '}' }}"
    "{% else %}"
    "{{ {'name': f['name'], 'arguments': f['arguments'] if f['arguments'] is defined else {}} | tojson }}"
    "{% endif %}"
    "{{ '\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] ~ '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{% set ns = namespace(name=message['name'] if message['name'] is string else '') %}"
    "{% set here = loop.index0 %}"
    "{% for m in messages[:here] if m['role'] == 'assistant' and m['tool_calls'] %}"
    "{% for call in m['tool_calls'] if call['id'] is defined and call['id'] == message['tool_call_id'] %}"
    "{% set ns.name = (call['function'] if call['function'] is defined else call)['name'] %}"
    "{% endfor %}{% endfor %}"
    "{{ '<|user|>\n' if loop.first or loop.previtem['role'] != 'tool' else '\n' }}"
    "{{ '<tool_response' ~ (' name=\"' ~ ns.name ~ '\"' if ns.name else '') ~ '>\n' }}"
    "{{ message['content'] if message['content'] is string else (message['content'] | tojson) }}"
    "{{ '\n</tool_response>' }}"
    "{{ '<|end|>\n' if loop.last or loop.nextitem['role'] != 'tool' else '' }}"
    "{% else %}"
    "{{ '<|' ~ message['role'] ~ '|>\n' ~ message['content'] ~ '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class DutchTokenizer:
    """A loaded tokenizer folder: the fast tokenizer plus the ids the trainer and packer need."""

    path: Path
    tokenizer: Tokenizer
    checksum: str

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def id(self, token: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise GptnlError(f"{self.path}: tokenizer has no {token} token")
        return tid

    def _config(self) -> dict:
        config = self.path / "tokenizer_config.json"
        if not config.is_file():
            return {}
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except ValueError:
            raise GptnlError(f"{config}: not a JSON object") from None
        if not isinstance(data, dict):
            raise GptnlError(f"{config}: not a JSON object")
        return data

    @staticmethod
    def _name(token) -> str | None:
        token = token.get("content") if isinstance(token, dict) else token
        return token if isinstance(token, str) and token else None

    @property
    def eos_id(self) -> int:
        """The end-of-document token: the one `tokenizer_config.json` names (a base model's own, e.g.
        Llama 3's `<|end_of_text|>`), else gptnl's `</s>`."""
        return self.id(self._name(self._config().get("eos_token")) or EOS)

    @property
    def bos_ids(self) -> list[int]:
        """What the tokenizer puts before a text, as `transformers` does: the `bos_token` when
        `tokenizer_config.json` sets `add_bos_token` (Llama 2, Mistral, Salamandra), else what
        `tokenizer.json`'s post-processor adds in front (Llama 3's `<|begin_of_text|>`); gptnl's own
        tokenizer adds nothing."""
        config = self._config()
        if "add_bos_token" in config:
            name = self._name(config.get("bos_token"))
            if not config["add_bos_token"]:
                return []
            if name is None:
                raise GptnlError(f"{self.path}/tokenizer_config.json: add_bos_token is set but no bos_token")
            return [self.id(name)]
        plain = self.tokenizer.encode("a", add_special_tokens=False).ids
        framed = self.tokenizer.encode("a", add_special_tokens=True).ids
        start = next((i for i in range(len(framed)) if framed[i:i + len(plain)] == plain), 0)
        return framed[:start]


def build_untrained() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train(
    texts: Iterable[str],
    vocab_size: int,
    out: Path,
    *,
    min_frequency: int = TOKENIZER.min_frequency,
    model_max_length: int = 4096,
    source: dict | None = None,
) -> DutchTokenizer:
    """Train on `texts` and write the tokenizer folder `out` (files written atomically)."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise GptnlError(f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least 263")
    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": list(ROLE_TOKENS)}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model_max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
    atomic_write_text(out / "special_tokens_map.json", json.dumps(special, indent=2))
    loaded = load(out)
    write_manifest(out, TokenizerManifest(
        consumed=TokenizerInputs(**(source or {})),
        produced=TokenizerOutputs(vocab_size=loaded.vocab_size, checksum=loaded.checksum),
        config={"vocab_size": vocab_size, "min_frequency": min_frequency}))
    return loaded


def checksum(path: Path) -> str:
    """sha256 of tokenizer.json: what the packer records so shards are never mixed with another vocabulary."""
    return hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()


def load(path: Path) -> DutchTokenizer:
    path = Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
        raise GptnlError(f"{path}: not a tokenizer folder (no tokenizer.json); train one with `gptnl tokenizer train`")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises bare Exception on a bad file
        raise GptnlError(f"{file}: cannot be loaded ({exc})") from None
    return DutchTokenizer(path=path, tokenizer=tok, checksum=checksum(path))


def fertility(tok: DutchTokenizer, text: str, progress: Callable[[int], None] | None = None) -> dict:
    """Tokens per whitespace-separated word (lower is better; English BPEs give ~1.3 on English)."""
    lines = [line for line in text.splitlines() if line.strip()]
    words = sum(len(line.split()) for line in lines)
    tokens = 0
    for enc in tok.tokenizer.encode_batch(lines, add_special_tokens=False):
        tokens += len(enc.ids)
        if progress:
            progress(1)
    if words == 0:
        raise GptnlError("the held-out text has no words")
    return {
        "words": words,
        "tokens": tokens,
        "characters": sum(len(line) for line in lines),
        "fertility": tokens / words,
        "chars_per_token": sum(len(line) for line in lines) / max(tokens, 1),
    }
