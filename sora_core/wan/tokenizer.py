"""SentencePiece unigram tokenizer (umt5's), read from a serialized ModelProto without the sentencepiece library.

It reproduces `sentencepiece.SentencePieceProcessor.encode` (0.2.x) id for id: the normaliser the
model's own spec asks for (its precompiled charsmap, a double-array trie of byte rewrites such as
nmt_nfkc; dummy prefix; extra-whitespace removal; spaces escaped as U+2581), the unigram Viterbi
with sentencepiece's float32 scores and tie-breaking, unknown characters (merged runs, or UTF-8
bytes when the model has byte fallback) and the EOS appended.

The model comes from the `spiece_model` uint8 tensor that ComfyUI stores in umt5 safetensors files
(the bytes of `SentencePieceProcessor.serialized_model_proto()`), or from a spiece.model file.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from dataclasses import dataclass

import torch
from safetensors import safe_open

SPACE = "\u2581"  # what sentencepiece writes for a space
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_MODEL_TYPES = {1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}
_UNK_PENALTY = 10.0  # sentencepiece's kUnkPenalty: an unknown character scores min_score - 10
_FLT_MAX = 3.4028234663852886e38
_FLT_MIN = 1.1754943508222875e-38  # sentencepiece starts max_score at FLT_MIN, the smallest *positive* float


# --- a minimal protobuf reader: just what ModelProto needs ---------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes):
    """Yield (field number, value) of one message: ints for varints, bytes for the rest."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        if i > n:
            raise ValueError(f"field {field} runs past the end of the message")
        yield field, value


@dataclass(frozen=True)
class SpieceSpec:
    """The parts of a sentencepiece ModelProto that encoding needs."""

    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    model_type: int = 1
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    normalizer: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def parse_model_proto(data: bytes) -> SpieceSpec:
    """A serialized sentencepiece ModelProto -> SpieceSpec (proto2 defaults where a field is absent)."""
    pieces, scores, types, trainer, norm = [], [], [], {}, {}
    for field, value in _fields(data):
        if field == 1:  # repeated SentencePiece
            piece, score, kind = None, 0.0, NORMAL
            for f, v in _fields(value):
                if f == 1:
                    piece = v.decode("utf-8")
                elif f == 2:
                    score = struct.unpack("<f", v)[0]
                elif f == 3:
                    kind = v
            if not piece:
                raise ValueError(f"piece {len(pieces)} is empty")
            pieces.append(piece)
            scores.append(score)
            types.append(kind)
        elif field == 2:  # TrainerSpec
            trainer = dict(_fields(value))
        elif field == 3:  # NormalizerSpec
            norm = dict(_fields(value))
    if not pieces:
        raise ValueError("it holds no pieces")
    return SpieceSpec(
        pieces=tuple(pieces), scores=tuple(scores), types=tuple(types),
        model_type=trainer.get(3, 1),
        byte_fallback=bool(trainer.get(35, 0)),
        treat_whitespace_as_suffix=bool(trainer.get(24, 0)),
        eos_piece=trainer.get(47, b"</s>").decode("utf-8"), pad_piece=trainer.get(48, b"<pad>").decode("utf-8"),
        normalizer=norm.get(1, b"").decode("utf-8", "replace"),
        precompiled_charsmap=norm.get(2, b""),
        add_dummy_prefix=bool(norm.get(3, 1)),
        remove_extra_whitespaces=bool(norm.get(4, 1)),
        escape_whitespaces=bool(norm.get(5, 1)),
    )


# --- normaliser ------------------------------------------------------------------------------------

class _CharsMap:
    """sentencepiece's precompiled charsmap: <trie size: uint32 LE><darts-clone double array><NUL-terminated outputs>."""

    def __init__(self, blob: bytes):
        if len(blob) <= 4:
            raise ValueError("its precompiled charsmap is broken (too short)")
        size = int.from_bytes(blob[:4], "little")
        if size >= len(blob) or size % 4:
            raise ValueError(f"its precompiled charsmap is broken (trie size {size} of a {len(blob)}-byte blob)")
        self.units = array("I", blob[4:4 + size])
        if sys.byteorder == "big":
            self.units.byteswap()
        self.outputs = blob[4 + size:]

    def longest(self, data: bytes, pos: int) -> tuple[int, bytes]:
        """The longest rule matching data[pos:] -> (bytes it consumes, its replacement); (0, b"") if none."""
        units = self.units
        n = len(units)
        best_len, best_value = 0, 0
        unit = units[0]
        node = (unit >> 10) << ((unit & 0x200) >> 6)
        for i in range(pos, len(data)):
            c = data[i]
            node ^= c
            if node >= n:
                break
            unit = units[node]
            if unit & 0x800000FF != c:  # label mismatch: no rule continues this way
                break
            node ^= (unit >> 10) << ((unit & 0x200) >> 6)
            if (unit >> 8) & 1 and node < n:  # a rule ends here; its value sits in the leaf unit
                best_len, best_value = i + 1 - pos, units[node] & 0x7FFFFFFF
        if not best_len:
            return 0, b""
        end = self.outputs.find(b"\0", best_value)
        return best_len, self.outputs[best_value:end if end >= 0 else len(self.outputs)]


def _utf8_char(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 character at data[i], or 0 if it is malformed (sentencepiece's DecodeUTF8)."""
    b, rest = data[i], len(data) - i
    if b < 0x80:
        return 1
    for length, lead_mask, lead, low in ((2, 0xE0, 0xC0, 0x80), (3, 0xF0, 0xE0, 0x800), (4, 0xF8, 0xF0, 0x10000)):
        if b & lead_mask == lead:
            if rest < length or any(data[i + k] & 0xC0 != 0x80 for k in range(1, length)):
                return 0
            cp = b & (0x7F >> length)
            for k in range(1, length):
                cp = (cp << 6) | (data[i + k] & 0x3F)
            ok = cp >= low and (cp < 0xD800 or 0xE000 <= cp <= 0x10FFFF)
            return length if ok else 0
    return 0


# --- the tokenizer ---------------------------------------------------------------------------------

class SentencePieceUnigram:
    """SentencePiece unigram tokenizer: text -> ids exactly as the sentencepiece library encodes them."""

    def __init__(self, model_proto: bytes, source: str = "tokenizer"):
        try:
            spec = parse_model_proto(bytes(model_proto))
        except (ValueError, UnicodeDecodeError, struct.error) as e:
            raise ValueError(f"{source} is not a sentencepiece model: {e}") from None
        if spec.model_type != 1:
            kind = _MODEL_TYPES.get(spec.model_type, str(spec.model_type))
            raise ValueError(f"{source} is a sentencepiece {kind} model; only unigram models (umt5, T5) are supported")
        self.spec, self.source = spec, source
        self._charsmap = _CharsMap(spec.precompiled_charsmap) if spec.precompiled_charsmap else None

        self.unk_id = None
        self._vocab: dict[str, int] = {}  # the pieces Viterbi may use (sentencepiece's trie)
        self._reserved: dict[str, int] = {}  # control / unknown / byte pieces, never matched in text
        user_defined, normal_scores = set(), [s for s, t in zip(spec.scores, spec.types) if t == NORMAL]
        self._min_score = min(normal_scores, default=_FLT_MAX)
        max_score = max(normal_scores + [_FLT_MIN])
        self._score = list(spec.scores)
        for i, (piece, kind) in enumerate(zip(spec.pieces, spec.types)):
            table = self._vocab if kind in (NORMAL, USER_DEFINED, UNUSED) else self._reserved
            if piece in table:
                raise ValueError(f"{source}: piece {piece!r} is defined twice")
            table[piece] = i
            if kind == UNKNOWN:
                self.unk_id = i
            elif kind == USER_DEFINED:
                user_defined.add(piece.encode("utf-8"))
                # sentencepiece's bonus that makes a user-defined symbol always win: bytes * max_score - 0.1 (in double)
                self._score[i] = _f32(len(piece.encode("utf-8")) * max_score) - 0.1
            elif kind == BYTE and not spec.byte_fallback:
                raise ValueError(f"{source}: byte piece {piece!r} found although byte_fallback is off")
        if self.unk_id is None:
            raise ValueError(f"{source}: the model defines no unknown piece")
        for piece in [p for p, i in self._vocab.items() if spec.types[i] == UNUSED]:
            del self._vocab[piece]  # an unused piece is in sentencepiece's trie but never chosen
        self._byte_ids = None
        if spec.byte_fallback:
            try:
                self._byte_ids = [self._reserved[f"<0x{b:02X}>"] for b in range(256)]
            except KeyError as e:
                raise ValueError(f"{source}: byte_fallback is on but byte piece {e.args[0]} is missing") from None
        self._user_defined = user_defined
        self._user_max = max((len(p) for p in user_defined), default=0)
        self._max_len = max((len(p) for p in self._vocab), default=1)
        self._unk_score = _f32(self._min_score - _UNK_PENALTY)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SentencePieceUnigram":
        """A spiece.model (a serialized ModelProto)."""
        path = str(path)
        if path.endswith(".json"):
            raise ValueError(f"tokenizer {path!r} is a Hugging Face tokenizer.json, which is not supported; "
                             "name the spiece.model that sits beside it instead")
        if path.endswith((".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")):
            raise ValueError(f"tokenizer {path!r} is a pickle file, which is never opened; name a spiece.model")
        with open(path, "rb") as f:
            return cls(f.read(), source=f"tokenizer {path!r}")

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor, source: str = "spiece_model tensor") -> "SentencePieceUnigram":
        """The `spiece_model` tensor of a umt5 safetensors file: the model's bytes as a 1-D uint8 tensor."""
        if tensor.dtype != torch.uint8 or tensor.dim() != 1:
            raise ValueError(f"{source} must be a 1-D uint8 tensor, got {tensor.dtype} of shape {tuple(tensor.shape)}")
        return cls(tensor.cpu().numpy().tobytes(), source=source)

    def _control_id(self, piece: str) -> int:
        """sentencepiece's eos_id() / pad_id(): the named piece's id if it is a control piece, else -1."""
        i = self._reserved.get(piece, -1)
        return i if i >= 0 and self.spec.types[i] == CONTROL else -1

    @property
    def eos_id(self) -> int:
        return self._control_id(self.spec.eos_piece)

    @property
    def pad_id(self) -> int:
        """umt5 pads with <pad> = 0; a model without a pad piece pads with 0 too (padding is masked anyway)."""
        return max(self._control_id(self.spec.pad_piece), 0)

    def __len__(self) -> int:
        return len(self.spec.pieces)

    # sentencepiece's Normalizer::NormalizePrefix: user-defined symbols pass unchanged, then the
    # longest charsmap rule, else one UTF-8 character (a malformed byte becomes U+FFFD).
    def _prefix(self, data: bytes, pos: int) -> tuple[bytes, int]:
        for length in range(min(self._user_max, len(data) - pos), 0, -1):
            if data[pos:pos + length] in self._user_defined:
                return data[pos:pos + length], length
        if self._charsmap is not None:
            length, out = self._charsmap.longest(data, pos)
            if length:
                return out, length
        length = _utf8_char(data, pos)
        return (data[pos:pos + length], length) if length else ("\ufffd".encode(), 1)

    def normalize(self, text: str) -> str:
        """The string the unigram model segments (e.g. " Hello  world" -> "▁Hello▁world")."""
        spec = self.spec
        data = text.encode("utf-8", "surrogatepass")
        pos, n = 0, len(data)
        if spec.remove_extra_whitespaces:  # leading whitespace goes
            while pos < n:
                out, used = self._prefix(data, pos)
                if out != b" ":
                    break
                pos += used
        if pos == n:
            return ""
        space = SPACE.encode() if spec.escape_whitespaces else b" "
        result = bytearray()
        if spec.add_dummy_prefix and not spec.treat_whitespace_as_suffix:
            result += space
        prev_space = spec.remove_extra_whitespaces
        while pos < n:
            out, used = self._prefix(data, pos)
            if prev_space:
                out = out.lstrip(b" ")
            if out:
                result += out.replace(b" ", space) if spec.escape_whitespaces else out
                prev_space = out.endswith(b" ")
            pos += used
            if not spec.remove_extra_whitespaces:
                prev_space = False
        if spec.remove_extra_whitespaces:
            while result.endswith(space):
                del result[-len(space):]
        if spec.add_dummy_prefix and spec.treat_whitespace_as_suffix:
            result += space
        return result.decode("utf-8")

    def _viterbi(self, s: str) -> list[tuple[int, int, int]]:
        """Best segmentation of a normalized string -> [(start, end, id)], as sentencepiece's EncodeOptimized.

        Path scores are float32 like sentencepiece's; a piece's candidate is compared in double before
        being stored, an unknown character's in float32 (that is how the C++ types fall), and the first
        best candidate found keeps a tie.
        """
        n, vocab, score, max_len = len(s), self._vocab, self._score, self._max_len
        best = array("f", bytes(4 * (n + 1)))
        start = [-1] * (n + 1)
        ids = [0] * (n + 1)
        rounded = array("f", [0.0])
        for i in range(n):
            base = best[i]
            single = False
            for end in range(i + 1, min(i + max_len, n) + 1):
                pid = vocab.get(s[i:end])
                if pid is None:
                    continue
                candidate = score[pid] + base
                if start[end] == -1 or candidate > best[end]:
                    best[end], start[end], ids[end] = candidate, i, pid
                single = single or end == i + 1
            if not single:
                rounded[0] = self._unk_score + base
                if start[i + 1] == -1 or rounded[0] > best[i + 1]:
                    best[i + 1], start[i + 1], ids[i + 1] = rounded[0], i, self.unk_id
        path, end = [], n
        while end > 0:
            path.append((start[end], end, ids[end]))
            end = start[end]
        return path[::-1]

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Text -> token ids, the EOS appended (as umt5 / T5 tokenizers do) unless add_eos=False."""
        normalized = self.normalize(text)
        ids, prev_unk = [], False
        for a, b, pid in self._viterbi(normalized):
            unk = pid == self.unk_id
            if unk and self._byte_ids is not None:
                ids.extend(self._byte_ids[x] for x in normalized[a:b].encode("utf-8"))
            elif not (unk and prev_unk):  # a run of unknown characters is one unknown token
                ids.append(pid)
            prev_unk = unk
        if add_eos:
            if self.eos_id < 0:
                raise ValueError(f"{self.source} has no EOS piece ({self.spec.eos_piece!r} is not a control piece)")
            ids.append(self.eos_id)
        return ids


def load_tokenizer(text_encoder_file: str | os.PathLike | None = None,
                   tokenizer_file: str | os.PathLike | None = None) -> SentencePieceUnigram:
    """The tokenizer file the user named, else the `spiece_model` tensor stored in the text encoder's safetensors file."""
    if tokenizer_file is not None:
        return SentencePieceUnigram.from_file(tokenizer_file)
    if text_encoder_file is None:
        raise ValueError("no tokenizer: name umt5's spiece.model, or a text encoder file that holds a `spiece_model` tensor")
    path = str(text_encoder_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text encoder {path!r} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            tensor = f.get_tensor("spiece_model") if "spiece_model" in f.keys() else None
    except Exception as e:  # safetensors' own error type
        raise ValueError(f"text encoder {path!r} is not a safetensors file: {e}") from None
    if tensor is None:
        raise ValueError(f"text encoder {path!r} holds no `spiece_model` tensor (its tokenizer); "
                         "name umt5's spiece.model as the tokenizer file")
    return SentencePieceUnigram.from_tensor(tensor, source=f"{path!r} (spiece_model)")


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]
