"""The model's own tokenizer, embedded in the file: sentencepiece for tokenizer.model, the
`tokenizers` library for tokenizer.json."""
from .errors import FormatError


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class Tokenizer:
    def __init__(self, f):
        meta = f.metadata.get("tokenizer")
        if not isinstance(meta, dict):
            raise FormatError(f.path, "metadata.tokenizer is missing")
        self.kind = meta.get("kind")
        try:
            blob = f.blob(meta["tensor"])
        except (KeyError, TypeError):
            raise FormatError(f.path, "metadata.tokenizer.tensor does not name an embedded tokenizer") from None
        try:
            if self.kind == "sentencepiece":
                import sentencepiece as spm
                self._sp = spm.SentencePieceProcessor(model_proto=blob)
                self.vocab_size = self._sp.get_piece_size()
            elif self.kind == "hf_tokenizers":
                from tokenizers import Tokenizer as HFTokenizer
                self._hf = HFTokenizer.from_str(blob.decode("utf-8"))
                self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
            else:
                raise FormatError(f.path, f"tokenizer kind {self.kind!r} is not supported")
        except FormatError:
            raise
        except Exception as e:   # the libraries raise assorted types on corrupt blobs
            raise FormatError(f.path, f"embedded {self.kind} tokenizer cannot be loaded: {e}") from None
        ids = meta.get("eos_ids", []), meta.get("special_ids", [])
        if not all(isinstance(x, list) and all(_is_id(i) for i in x) for x in ids) or \
                not (meta.get("bos_id") is None or _is_id(meta.get("bos_id"))):
            raise FormatError(f.path, "metadata.tokenizer: bos_id, eos_ids and special_ids must be non-negative integer ids")
        for key in ("chat_template", "bos_token", "eos_token"):
            if meta.get(key) is not None and not isinstance(meta.get(key), str):
                raise FormatError(f.path, f"metadata.tokenizer.{key} must be a string or null")
        self.add_bos = bool(meta.get("add_bos", False))
        self.bos_id = meta.get("bos_id")
        self.eos_ids = [int(i) for i in meta.get("eos_ids", [])]
        self.special_ids = set(int(i) for i in meta.get("special_ids", [])) | set(self.eos_ids)
        if self.bos_id is not None:
            self.special_ids.add(int(self.bos_id))
        self.chat_template = meta.get("chat_template")
        self.bos_token = meta.get("bos_token")
        self.eos_token = meta.get("eos_token")

    def encode(self, text: str, add_bos: bool = None) -> list:
        """Token ids of `text`; the BOS token is prepended when the model's tokenizer does so
        (or as `add_bos` says)."""
        add = self.add_bos if add_bos is None else add_bos
        if self.kind == "sentencepiece":
            ids = self._sp.encode(text)
            return ([int(self.bos_id)] if add and self.bos_id is not None else []) + ids
        # tokenizer.json: special tokens in the text are parsed; its post-processor adds BOS
        ids = self._hf.encode(text, add_special_tokens=False).ids
        if add and self.bos_id is not None:
            ids = [int(self.bos_id)] + ids
        return ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) not in self.special_ids]
        if self.kind == "sentencepiece":
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=True)

    def token_to_id(self, token: str):
        if self.kind == "sentencepiece":
            i = self._sp.piece_to_id(token)
            return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i
        return self._hf.token_to_id(token)

    def id_to_piece(self, i: int) -> str:
        if self.kind == "sentencepiece":
            return self._sp.id_to_piece(int(i))
        return self._hf.id_to_token(int(i))


class StreamDecoder:
    """Turns a stream of token ids into text pieces, holding back bytes of a character that
    spans several tokens (the prefix/read offset method): decoding a short window of ids keeps
    the cost constant per token and keeps the spaces a lone token would lose."""

    def __init__(self, tokenizer: Tokenizer, context_ids=()):
        self.tok = tokenizer
        self.ids = [int(i) for i in context_ids if int(i) not in tokenizer.special_ids][-4:]
        self.prefix = 0
        self.read = len(self.ids)

    def push(self, token_id: int) -> str:
        if int(token_id) in self.tok.special_ids:
            return ""
        self.ids.append(int(token_id))
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            piece = after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
            return piece
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the end of a stream)."""
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""
