"""CKKS operations on SEAL ciphertexts (TenSEAL's ``sealapi``) with exact scale
bookkeeping, shared by the Chebyshev evaluator and the batch runner.

TenSEAL's own vector API rescales after every product and then overwrites the
scale with the nominal 2^bits, although the prime it divided by differs from
2^bits (by ~6e-6 relatively for 40-bit primes at N=16384): each level adds that
much relative error. Here every ciphertext keeps the exact scale SEAL computes,
and a product by a plaintext scalar encodes the scalar at the scale that makes
the rescaled result land on the scale the caller asks for — so sums of terms
from different levels and paths need no correction and lose nothing.

Levels are counted as rescales consumed since encryption (0 = fresh).
"""
from __future__ import annotations

from collections import Counter

from .tenseal_io import sealapi


class Engine:
    """Evaluator, encoder and relinearisation keys of one TenSEAL context (public or secret).
    ``counts`` tallies the operations run (ct_mult, plain_mult, add, rescale, mod_switch)."""

    def __init__(self, ctx):
        s = sealapi()
        self.s, self.ctx = s, ctx
        self.sc = ctx.seal_context().data
        self.ev = s.Evaluator(self.sc)
        self.encoder = s.CKKSEncoder(self.sc)
        self.relin = ctx.relin_keys().data
        self.scale = float(ctx.global_scale)
        self.slots = self.encoder.slot_count()
        self.parms_ids, self.primes = [], []   # by level: the parameters, and the prime a rescale there drops
        data = self.sc.first_context_data()
        while data is not None:
            self.parms_ids.append(data.parms_id())
            self.primes.append(float(data.parms().coeff_modulus()[-1].value()))
            data = data.next_context_data()
        self.levels = len(self.parms_ids) - 1
        self.counts: Counter = Counter()
        self._sym = self._pub = self._dec = None

    # ------------------------------------------------------------ levels
    def level(self, ct) -> int:
        return self.levels - self.sc.get_context_data(ct.parms_id()).chain_index()

    def at_level(self, ct, level: int):
        """``ct`` switched down to ``level`` (itself when it is there already)."""
        have = self.level(ct)
        if have == level:
            return ct
        if have > level:
            raise ValueError(f"a ciphertext at level {have} cannot go back up to level {level}")
        self._check_level(level)
        out = self.s.Ciphertext()
        self.ev.mod_switch_to(ct, self.parms_ids[level], out)
        self.counts["mod_switch"] += 1
        return out

    def _check_level(self, level: int) -> None:
        if level > self.levels:
            raise ValueError(f"level {level} is past the end of the modulus chain ({self.levels} levels): "
                             f"the parameters are too small for the depth")

    # ------------------------------------------------------------ arithmetic
    def plain_scalar(self, value: float, level: int, scale: float):
        pt = self.s.Plaintext()
        self.encoder.encode(float(value), self.parms_ids[level], scale, pt)
        return pt

    def mul_scalar_into(self, acc, ct, c: float, level: int, scale: float):
        """acc + c * ct, unrescaled, for a result at (level + 1, scale) after one rescale: ct is
        taken to ``level`` and c encoded at scale * q / scale(ct). Returns the new accumulator."""
        x = self.at_level(ct, level)
        plain_scale = scale * self.primes[level] / x.scale
        if abs(c) * plain_scale < 0.5:      # encodes to zero: SEAL refuses the (transparent) product
            return acc
        prod = self.s.Ciphertext()
        self.ev.multiply_plain(x, self.plain_scalar(c, level, plain_scale), prod)
        prod.scale = scale * self.primes[level]     # the same double for every term (it may differ by an ulp)
        self.counts["plain_mult"] += 1
        if acc is None:
            return prod
        self.ev.add_inplace(acc, prod)
        self.counts["add"] += 1
        return acc

    def add_const(self, ct, c: float) -> None:
        if c:
            self.ev.add_plain_inplace(ct, self.plain_scalar(c, self.level(ct), ct.scale))
            self.counts["add"] += 1

    def rescale(self, acc, scale: float):
        self._check_level(self.level(acc) + 1)
        out = self.s.Ciphertext()
        self.ev.rescale_to_next(acc, out)
        out.scale = scale
        self.counts["rescale"] += 1
        return out

    def lincomb(self, terms, const: float, level: int, scale: float):
        """const + sum c * ct over ``terms`` [(c, ct)] at exactly (level, scale): one product per
        non-zero c, one rescale. Every ct must be at a level below ``level``."""
        self._check_level(level)
        acc = None
        for c, ct in terms:
            if c:
                acc = self.mul_scalar_into(acc, ct, c, level - 1, scale)
        if acc is None:
            raise ValueError("lincomb needs at least one non-zero term")
        self.add_const(acc, const)
        return self.rescale(acc, scale)

    def multiply(self, a, b):
        """a * b (relinearised, rescaled) at one level below the deeper of the two, at the scale
        scale(a) * scale(b) / q."""
        level = max(self.level(a), self.level(b))
        a, b = self.at_level(a, level), self.at_level(b, level)
        out = self.s.Ciphertext()
        if a is b:
            self.ev.square(a, out)
        else:
            self.ev.multiply(a, b, out)
        self.ev.relinearize_inplace(out, self.relin)
        self.counts["ct_mult"] += 1
        return self.rescale(out, a.scale * b.scale / self.primes[level])

    def add(self, a, b):
        out = self.s.Ciphertext()
        self.ev.add(a, b, out)
        self.counts["add"] += 1
        return out

    def add_inplace(self, a, b) -> None:
        self.ev.add_inplace(a, b)
        self.counts["add"] += 1

    # ------------------------------------------------------------ client side
    def encrypt(self, values, symmetric_key=None):
        """One ciphertext of ``values`` (at most N/2) at level 0 and the context's scale; with the
        secret key (symmetric) when given, else with the public key."""
        pt = self.s.Plaintext()
        self.encoder.encode([float(v) for v in values], self.scale, pt)
        ct = self.s.Ciphertext()
        if symmetric_key is not None:
            if self._sym is None:
                self._sym = self.s.Encryptor(self.sc, symmetric_key)
            self._sym.encrypt_symmetric(pt, ct)
        else:
            if self._pub is None:
                self._pub = self.s.Encryptor(self.sc, self.ctx.public_key().data)
            self._pub.encrypt(pt, ct)
        return ct

    def encrypt_seeded(self, values, secret_key):
        """Like encrypt with the secret key, but as SEAL's Serializable: saved, half of it is a seed."""
        pt = self.s.Plaintext()
        self.encoder.encode([float(v) for v in values], self.scale, pt)
        if self._sym is None:
            self._sym = self.s.Encryptor(self.sc, secret_key)
        return self._sym.encrypt_symmetric(pt)

    def decrypt(self, ct, n: int):
        if not self.ctx.has_secret_key():
            raise ValueError("this context holds no secret key: it cannot decrypt")
        pt = self.s.Plaintext()
        if self._dec is None:
            self._dec = self.s.Decryptor(self.sc, self.ctx.secret_key().data)
        self._dec.decrypt(ct, pt)
        return self.encoder.decode_double(pt)[:n]
