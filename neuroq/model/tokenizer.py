"""SentencePiece tokenizer with the NeuroQ id layout.

Ids 0-5 are fixed: `<pad>` 0, `<unk>` 1, BOS 2, EOS 3, `<USER>` 4, `<ASSISTANT>` 5. The dialogue
markers are SentencePiece user-defined symbols, so they are always one atomic piece. Byte
fallback is on: a character never seen in training becomes its UTF-8 bytes, never `<unk>`.

Marker injection: SentencePiece would match the literal text `<USER>` inside user input and emit
id 4, letting a user forge a turn. `encode()` therefore rewrites every marker id it produces into
the character pieces of the same literal text, so the text survives a round trip but can never
become a marker id. Only `encode_prompt`/`encode_dialogue` place marker ids.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

MODEL_FILE = "tokenizer.model"

# The fixed id layout: every tokenizer, training record and generation step relies on it, so it is
# defined once, here. SPECIAL_PIECES[i] is the SentencePiece piece of id i.
PAD_ID, UNK_ID, BOS_ID, EOS_ID, USER_ID, ASSISTANT_ID = range(6)
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>", "<USER>", "<ASSISTANT>")
SPECIAL_IDS = frozenset(range(len(SPECIAL_PIECES)))

# Default vocabulary: the shipped corpus has about 1,100 distinct characters; 4,000 pieces leave
# room for common Japanese words and English subwords while keeping the embedding and output
# tables (2·V·E parameters) small for a model that must train on two CPU cores.
DEFAULT_VOCAB_SIZE = 4000


class TokenizerError(ValueError):
    """The tokenizer file is missing or invalid, or training parameters are out of range."""


class Tokenizer:
    PAD, UNK, BOS, EOS, USER, ASSISTANT = PAD_ID, UNK_ID, BOS_ID, EOS_ID, USER_ID, ASSISTANT_ID
    MARKERS = SPECIAL_PIECES[USER_ID], SPECIAL_PIECES[ASSISTANT_ID]
    NUM_SPECIAL = len(SPECIAL_PIECES)

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        self.sp = processor
        self._check_layout()
        # Ids that spell each marker literally, used to neutralise markers found in user text.
        self._literal = {
            self.USER: self._char_ids(self.MARKERS[0]),
            self.ASSISTANT: self._char_ids(self.MARKERS[1]),
        }

    def _check_layout(self) -> None:
        if self.sp.get_piece_size() <= self.NUM_SPECIAL:
            raise TokenizerError("tokenizer: vocabulary is too small")
        for i, piece in enumerate(SPECIAL_PIECES):
            actual = self.sp.id_to_piece(i)
            if actual != piece:
                raise TokenizerError(f"tokenizer: id {i} must be {piece!r}, found {actual!r}")

    def _char_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for ch in text:
            pid = self.sp.piece_to_id(ch)
            if pid != self.UNK and pid >= self.NUM_SPECIAL:
                ids.append(pid)
            else:
                ids.extend(self.sp.piece_to_id(f"<0x{b:02X}>") for b in ch.encode("utf-8"))
        return ids

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """Text to ids without BOS/EOS; literal markers in the text stay text (see module doc)."""
        ids: list[int] = []
        for i in self.sp.encode(text, out_type=int):
            literal = self._literal.get(i)
            if literal is None:
                ids.append(i)
            else:
                ids.extend(literal)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text, skipping pad/unk/BOS/EOS and the markers."""
        kept = [int(i) for i in ids if int(i) >= self.NUM_SPECIAL]
        return str(self.sp.decode(kept))

    def encode_prompt(self, user: str) -> list[int]:
        """`BOS <USER> user <ASSISTANT>`: what the model continues with a reply."""
        return [self.BOS, self.USER, *self.encode(user), self.ASSISTANT]

    def encode_dialogue(self, user: str | None, assistant: str) -> list[int]:
        """A training record: the prompt, the reply and EOS, so the model learns where to stop.

        A plain text (`user` None) is `BOS text EOS`.
        """
        if user is None:
            return [self.BOS, *self.encode(assistant), self.EOS]
        return [*self.encode_prompt(user), *self.encode(assistant), self.EOS]

    def serialized(self) -> bytes:
        return bytes(self.sp.serialized_model_proto())

    def save(self, directory: str | Path) -> Path:
        """Write `tokenizer.model` into directory (created if needed); returns the file path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / MODEL_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(self.serialized())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a `.model` file or a directory holding `tokenizer.model`."""
        p = Path(path)
        if p.is_dir():
            p = p / MODEL_FILE
        if not p.is_file():
            raise TokenizerError(f"tokenizer: no such file: {p}")
        return cls.from_bytes(p.read_bytes(), source=str(p))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Tokenizer:
        sp = spm.SentencePieceProcessor()
        try:
            sp.load_from_serialized_proto(data)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"tokenizer: {source} is not a SentencePiece model ({e})") from e
        return cls(sp)


def train_tokenizer(
    texts: Sequence[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    seed: int = 0,
    model_type: str = "bpe",
) -> Tokenizer:
    """Train a tokenizer on texts (one sentence each), in memory.

    Deterministic for the same texts and parameters: one thread, no input sampling or shuffling,
    and a fixed seed. `vocab_size` is an upper bound: on a tiny corpus SentencePiece stops early
    (`hard_vocab_limit` off) rather than failing, so read `Tokenizer.vocab_size` afterwards.
    """
    if not isinstance(vocab_size, int) or vocab_size < 300:
        # 6 specials + 256 byte pieces + room for characters.
        raise TokenizerError(f"vocab_size must be an integer >= 300, got {vocab_size!r}")
    lines = [t.replace("\n", " ") for t in texts if t.strip()]
    if not lines:
        raise TokenizerError("tokenizer: no training text")
    # An iterator and an in-memory writer keep temp paths out of the model proto, so the same
    # input gives a byte-identical file.
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=0.9995,
            normalization_rule_name="nmt_nfkc",
            byte_fallback=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            user_defined_symbols=list(Tokenizer.MARKERS),
            max_sentence_length=1 << 16,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            minloglevel=2,
        )
    except RuntimeError as e:
        # SentencePiece reports e.g. a vocabulary smaller than the corpus's character set.
        raise TokenizerError(f"tokenizer training failed (vocab_size={vocab_size}): {e}") from e
    data = model.getvalue()
    return Tokenizer.from_bytes(data, source="trained model")
