"""Fingerspelling mode of the built-in corpus (`python -m corpus --mode fingerspelling`).

Short texts of 1-3 words (names, places, a few nouns, made-up names), each word spelled letter by letter with a
two-handed manual alphabet: every letter is a hand shape and palm orientation of the right hand
together with a shape and orientation of the left hand, held ~8-12 frames at 25 fps, joined by
transitions of 2-4 frames. Both hands stay in a small space in front of the chest and only drift a
few centimetres along a word, so the meaning lies in quick sequences of finger configurations, not
in large arm paths: the hard case for a text-to-pose model, which must know at every frame which
letter of which word it is producing. Sequences last ~80-300 frames. The default sizes (400
training sentences) match small real recordings.
"""
import functools

import numpy as np

from corpus.signing import (HANDSHAPES, ORIENTATIONS, _anchor, _assemble, _geometry,
                            _hand_piece, _nonmanual_piece, _orientation, _shape_vector,
                            finish_tracks)
from scipy.spatial.transform import Rotation

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
ALPHABET_SEED = 1907   # fixes the hand configuration of every letter
LETTER_FRAMES = (8, 12)    # a letter is held 8-12 frames (times the signer's tempo)
TRANSITION_FRAMES = (2, 4)  # letter-to-letter transitions
WORD_GAP_FRAMES = (5, 8)    # the pause between two words
MAX_LETTERS = 16            # longer texts are redrawn (keeps sequences under ~300 frames)
# Wrist targets in right-hand space (x < 0: the hand's own side), anchored at the neck: the right
# hand spells in front of the chest, the left hand sits close to it as the second articulator.
RIGHT_SPACE = ("body", (-0.08, -0.08, 0.30))
LEFT_SPACE = ("body", (-0.02, -0.17, 0.26))
DRIFT = 0.012   # the right hand moves this far outward (metres, before body scale) per letter
RIGHT_ORIENTATIONS = ("up_fwd", "up_side", "fwd_side", "side_body")
LEFT_SHAPES = ("B", "5", "1", "V", "S", "C")
LEFT_ORIENTATIONS = ("up_body", "fwd_up", "up_side")

COMMON_WORDS = (
    # first names
    "anna", "paul", "lena", "jonas", "marie", "felix", "emma", "lukas", "sophie", "max", "mia",
    "leon", "clara", "tim", "hanna", "jakob", "nina", "erik", "laura", "oskar", "greta", "ben",
    "ida", "moritz", "frieda", "karl", "zoe", "vincent", "wilma", "quentin", "yvonne", "xaver",
    # places
    "berlin", "hamburg", "bremen", "kiel", "bonn", "dresden", "leipzig", "essen", "ulm", "jena",
    "mainz", "trier", "passau", "rostock", "erfurt", "koblenz", "zwickau", "hagen", "wien",
    "zurich", "oslo", "prag", "rom", "paris", "madrid", "kairo", "quito", "york",
    # nouns
    "kaffee", "pizza", "taxi", "hotel", "radio", "video", "email", "bank", "kino", "park",
    "zoo", "yoga", "jazz", "boxen", "quiz", "fax",
)
VOCABULARY_SIZE = 160   # common words plus made-up names: a word occurs in ~5 of 400 training sentences
VOCABULARY_SEED = 25


@functools.lru_cache(maxsize=1)
def vocabulary():
    """The words of the mode: COMMON_WORDS, then made-up names of 2-3 syllables up to
    VOCABULARY_SIZE. Like the names, places and rare words that people fingerspell, the names
    split into several subword tokens, and the words are many: a word occurs in ~5 of 400
    training sentences, so a model must spell, not recall whole words."""
    rng = np.random.default_rng(VOCABULARY_SEED)
    onsets = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "br", "ch", "fr", "gr", "kl", "sch", "st", "tr", "qu", "x", "y")
    vowels = ("a", "e", "i", "o", "u", "au", "ei", "y")
    codas = ("", "", "", "n", "r", "s", "l", "m", "t", "x", "k")
    words, seen = list(COMMON_WORDS), set(COMMON_WORDS)
    while len(words) < VOCABULARY_SIZE:
        word = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                       for _ in range(int(rng.integers(2, 4)))) + codas[rng.integers(len(codas))]
        if 3 <= len(word) <= 9 and word not in seen:
            words.append(word)
            seen.add(word)
    return tuple(words)


@functools.lru_cache(maxsize=1)
def alphabet():
    """{letter: (right shape, right orientation, left shape, left orientation)}: 26 distinct
    two-handed configurations; any two letters differ in at least two of the four attributes, and
    no two letters share the right hand's configuration."""
    rng = np.random.default_rng(ALPHABET_SEED)
    shapes = sorted(HANDSHAPES)
    values = (shapes, RIGHT_ORIENTATIONS, LEFT_SHAPES, LEFT_ORIENTATIONS)
    chosen = []
    for letter in ALPHABET:
        for _ in range(10000):
            cand = tuple(int(rng.integers(len(v))) for v in values)
            if all(cand[:2] != c[:2] and sum(a != b for a, b in zip(cand, c)) >= 2 for c in chosen):
                break
        else:  # pragma: no cover - the space (17 x 4 x 6 x 3) is far larger than 26
            raise RuntimeError("could not draw a distinct alphabet")
        chosen.append(cand)
    return {letter: tuple(v[i] for v, i in zip(values, code))
            for letter, code in zip(ALPHABET, chosen)}


def make_sentence(rng):
    """One (text, gloss) pair: 1-3 lower-case words; the gloss is the upper-case words (each word
    is one fingerspelled sign)."""
    while True:
        count = int(rng.choice(3, p=(0.3, 0.45, 0.25))) + 1
        words = [vocabulary()[i] for i in rng.choice(VOCABULARY_SIZE, size=count, replace=False)]
        if sum(map(len, words)) <= MAX_LETTERS:
            return " ".join(words), " ".join(w.upper() for w in words)


def gloss_inventory():
    return tuple(sorted(w.upper() for w in vocabulary()))


def _letter_hands(letter, position, geo, n, rng):
    """Tracks of both hands while `letter` is held for n frames, the right hand `position` letters
    along its word."""
    right_shape, right_ori, left_shape, left_ori = alphabet()[letter]
    piece = {}
    for side, space, shape, ori, drift in (("r", RIGHT_SPACE, right_shape, right_ori, position),
                                           ("l", LEFT_SPACE, left_shape, left_ori, 0)):
        wrist = _anchor(space, geo) + np.array([-DRIFT * drift, 0.0, 0.0]) * geo["body"] \
            + rng.normal(0, 0.004, 3) * geo["body"]
        wobble = 0.006 * geo["body"] * np.sin(np.pi * np.linspace(0, 1, n))[:, None] * rng.normal(size=3)
        rot = Rotation.from_rotvec(rng.normal(0, 0.05, 3)) * _orientation(*ORIENTATIONS[ori])
        piece[f"wrist_{side}"] = wrist + wobble                                        # (n, 3)
        piece[f"quat_{side}"] = np.tile(rot.as_quat(), (n, 1))                           # (n, 4)
        piece[f"shape_{side}"] = _shape_vector(shape) + rng.normal(0, 0.04, (1, 16)) \
            + np.zeros((n, 1))                                                           # (n, 16)
    return piece


def render_fingerspelling(gloss, signer, rng, return_spans=False):
    """Pose sequence (N, 178, 3) float32 of the fingerspelled words of `gloss` (a space-separated
    string of words). With return_spans=True also returns [(letter, first_frame, end_frame), ...]
    of the held part of every letter."""
    words = gloss.lower().split()
    unknown = [w for w in words if not w or set(w) - set(ALPHABET)]
    if not words or unknown:
        raise ValueError(f"render_fingerspelling needs words of the letters a-z, got {gloss!r}")
    geo, tempo = _geometry(signer), signer["tempo"]
    letters = [(ch, i, k) for k, w in enumerate(words) for i, ch in enumerate(w)]
    rests = rng.integers(2, 5, size=2)
    pieces = []
    for n, letter in [(rests[0], None)] + [
            (int(np.clip(round(rng.uniform(*LETTER_FRAMES) * tempo), 6, 15)), lt) for lt in letters] \
            + [(rests[1], None)]:
        sign = None if letter is None else {"syllables": 1, "rounding": 0.7 * (letter[0] in "ou"),
                                            "brow": 0.0, "head": "none", "lean": 0.0}
        piece = _nonmanual_piece(sign, n, signer, rng)
        if letter is None:
            for side in "rl":
                for key, value in _hand_piece(None, "rest", n, geo, signer, rng).items():
                    piece[f"{key}_{side}"] = value
        else:
            piece.update(_letter_hands(letter[0], letter[1], geo, n, rng))
        pieces.append(piece)
    # gap k joins piece k and piece k + 1: rest -> first letter, letter -> letter (a longer pause
    # where a new word starts), last letter -> rest
    gaps = []
    for k in range(len(pieces) - 1):
        if k in (0, len(pieces) - 2):
            low, high = 5, 7
        else:
            low, high = WORD_GAP_FRAMES if letters[k][2] != letters[k - 1][2] else TRANSITION_FRAMES
        gaps.append(max(2, int(round(rng.uniform(low, high) * tempo))))
    poses = finish_tracks({key: _assemble(pieces, gaps, key) for key in pieces[0]}, signer, geo, rng)
    if not return_spans:
        return poses
    spans, start = [], 0
    for k, piece in enumerate(pieces):
        n = len(piece["face"])
        if 0 < k < len(pieces) - 1:
            spans.append((letters[k - 1][0], start, start + n))
        start += n + (gaps[k] if k < len(gaps) else 0)
    return poses, spans
