"""Built-in synthetic sign-language corpus in the PHOENIX-2014T 3D release format (§4.1).

The paper trains on the SLRTP 2025 3D poses of PHOENIX-2014T (German weather forecasts, DGS),
which cannot be downloaded here. This module writes a stand-in with the same file format
(REFERENCE.md §1) and the same difficulties: German weather sentences whose gloss sequence is
in sign order (time first, place before weather, modifiers after the noun, function words not
signed), signs built from handshape / location / movement / palm orientation, two-handed
signs, mouthing and other non-manual components, several signers with their own bodies, speeds
and tracking noise, co-articulated transitions and a rest pose at both ends.

    python data.py synthetic --out-dir runs/demo/data [--seed 0] [--num-train 1200] [--signers 6]

Coordinates are metres in a body-centred frame: origin at the neck (shoulder midpoint of the
upright torso), x to the signer's left, y up, z toward the camera; shoulders 0.32-0.40 apart.
25 fps. Every sample is `{"name", "text", "gloss", "poses_3d": float32 (N, 178, 3), "speaker"}`.
Hand and arm bone lengths are exact and constant for a signer: tracking noise is added to the
joint angles, wrist targets and head pose, never to single hand or arm joints.
"""
import functools
import os

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from data import ARTICULATORS, FACE_CONTOURS_178, FPS, HAND_FINGERS, NUM_JOINTS

LEXICON_SEED = 2014   # fixes the sign of every gloss: all corpus seeds speak the same language
SIGNER_SEED = 7       # fixes the bodies of Signer01, Signer02, ...
DEFAULT_SIZES = {"train": 1200, "dev": 100, "test": 100}
SIGN_FRAMES = (8, 20)  # a sign (without its transitions) lasts 8-20 frames at 25 fps
assert FPS == 25

# ---------------------------------------------------------------------------------------------
# Language: German weather sentences and their glosses in sign order
# ---------------------------------------------------------------------------------------------

WEEKDAYS = ("montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag", "sonntag")
MONTHS = ("januar", "februar", "märz", "april", "mai", "juni", "juli", "august", "september",
          "oktober", "november", "dezember")
NUMBERS = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
           "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn",
           "neunzehn", "zwanzig")
ORDINALS = ("", "ersten", "zweiten", "dritten", "vierten", "fünften", "sechsten", "siebten",
            "achten", "neunten", "zehnten", "elften", "zwölften", "dreizehnten", "vierzehnten",
            "fünfzehnten", "sechzehnten", "siebzehnten", "achtzehnten", "neunzehnten")
UNITS = ("", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")


def gloss_of(word):
    """PHOENIX-style gloss spelling of a German word: upper case, umlauts as AE/OE/UE, ß as SS."""
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        word = word.replace(a, b)
    return word.upper()


def number_phrase(n, ordinal=False):
    """German number word (cardinal or ordinal, -39..39) and its glosses; 21-39 are signed as
    unit then tens."""
    if n < 0:
        words, glosses = number_phrase(-n, ordinal)
        return "minus " + words, "MINUS " + glosses
    if n <= 20 and not (ordinal and n == 20):
        return (ORDINALS[n] if ordinal else NUMBERS[n]), gloss_of(NUMBERS[n])
    tens, unit = ("zwanzig", n - 20) if n < 30 else ("dreißig", n - 30)
    word = (UNITS[unit] + "und" if unit else "") + tens + ("sten" if ordinal else "")
    glosses = ((gloss_of(NUMBERS[unit]) + " ") if unit else "") + gloss_of(tens)
    return word, glosses


# (words, glosses) phrase tables; the gloss column is the sign for the whole phrase
DAY_ALONE = [("am " + d, gloss_of(d)) for d in WEEKDAYS] + [
    ("heute", "HEUTE"), ("morgen", "MORGEN"), ("übermorgen", "UEBERMORGEN"),
    ("am wochenende", "WOCHENENDE"), ("in den nächsten tagen", "NAECHSTE TAG")]
DAYTIME_SHORT = [("früh", "FRUEH"), ("vormittag", "VORMITTAG"), ("mittag", "MITTAG"),
                 ("nachmittag", "NACHMITTAG"), ("abend", "ABEND"), ("nacht", "NACHT")]
DAYTIME = [("in der nacht", "NACHT"), ("nachts", "NACHT"), ("am abend", "ABEND"),
           ("abends", "ABEND"), ("zum abend hin", "ABEND"), ("am nachmittag", "NACHMITTAG"),
           ("in der zweiten tageshälfte", "NACHMITTAG"), ("am vormittag", "VORMITTAG"),
           ("am mittag", "MITTAG"), ("morgens", "FRUEH"), ("tagsüber", "TAG"),
           ("im laufe des tages", "TAG VERLAUF")]
COMPASS = ("norden", "süden", "osten", "westen", "nordwesten", "nordosten", "südwesten", "südosten")
COMPASS_GLOSS = {c: gloss_of(c[:-2] if c.endswith("en") else c) for c in COMPASS}
# place: (locative phrase, source phrase or None, gloss)
PLACES = [("im " + c, "von " + c, COMPASS_GLOSS[c]) for c in COMPASS] + [
    ("in der mitte", None, "MITTE"), ("an der küste", "von der küste", "KUESTE"),
    ("an der nordsee", "von der nordsee", "NORDSEE"), ("an der ostsee", "von der ostsee", "OSTSEE"),
    ("an den alpen", "von den alpen", "ALPEN"), ("im bergland", None, "BERG"),
    ("in den mittelgebirgen", None, "BERG"), ("am rhein", "vom rhein", "RHEIN"),
    ("in bayern", "aus bayern", "BAYERN"), ("über dem atlantik", "vom atlantik", "ATLANTIK"),
    ("in frankreich", "aus frankreich", "FRANKREICH"),
    ("in skandinavien", "aus skandinavien", "SKANDINAVIEN"),
    ("im ganzen land", None, "UEBERALL"), ("überall", None, "UEBERALL"),
    ("im schwarzwald", None, "SCHWARZWALD")]
# phenomenon: gloss, nominative/accusative noun, dative noun, gender, intensity adjectives
PHENOMENA = [
    ("REGEN", "regen", "regen", "m", ("stark", "kräftig", "leicht", "ergiebig")),
    ("SCHNEE", "schnee", "schnee", "m", ("stark", "leicht", "ergiebig")),
    ("SCHNEE REGEN", "schneeregen", "schneeregen", "m", ("leicht",)),
    ("GEWITTER", "gewitter", "gewittern", "pl", ("stark", "kräftig", "heftig", "einzeln")),
    ("SCHAUER", "schauer", "schauern", "pl", ("stark", "kräftig", "leicht", "einzeln")),
    ("NEBEL", "nebel", "nebel", "m", ("dicht",)),
    ("SONNE", "sonnenschein", "sonnenschein", "m", ("viel",)),
    ("WOLKE", "wolken", "wolken", "pl", ("dicht", "viel")),
    ("WIND", "wind", "wind", "m", ("stark", "kräftig", "schwach")),
    ("STURM", "sturmböen", "sturmböen", "pl", ("heftig", "stark")),
    ("GLATT", "glätte", "glätte", "f", ()),
    ("FROST", "frost", "frost", "m", ("stark", "leicht")),
    ("HAGEL", "hagel", "hagel", "m", ())]
INTENSITY = {"stark": "STARK", "kräftig": "STARK", "heftig": "STARK", "leicht": "SCHWACH",
             "schwach": "SCHWACH", "ergiebig": "VIEL", "viel": "VIEL", "dicht": "DICHT",
             "einzeln": "EINZELN"}
# strong adjective endings (no article) by case and gender
ENDINGS = {"nom": {"m": "er", "f": "e", "n": "es", "pl": "e"},
           "acc": {"m": "en", "f": "e", "n": "es", "pl": "e"},
           "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"}}
ARTICLE = {"m": "der", "f": "die", "n": "das", "pl": "die"}
KEIN = {"m": "keinen", "f": "keine", "n": "kein", "pl": "keine"}   # accusative
PREDICATES = [("sonnig", "SONNE"), ("heiter", "FREUNDLICH"), ("freundlich", "FREUNDLICH"),
              ("bewölkt", "WOLKE"), ("wolkig", "WOLKE"), ("regnerisch", "REGEN"),
              ("neblig", "NEBEL"), ("windig", "WIND"), ("stürmisch", "STURM"),
              ("trocken", "TROCKEN"), ("klar", "KLAR"), ("wechselhaft", "WECHSELHAFT"),
              ("mild", "MILD"), ("milder", "MILD"), ("warm", "WARM"), ("wärmer", "WARM"),
              ("kalt", "KALT"), ("kälter", "KALT"), ("kühl", "KUEHL"), ("kühler", "KUEHL"),
              ("schwül", "SCHWUEL"), ("frostig", "FROST"), ("glatt", "GLATT")]
ADVERBS = [("überwiegend", "MEISTENS"), ("meist", "MEISTENS"), ("zeitweise", "MANCHMAL"),
           ("örtlich", "REGION"), ("gebietsweise", "REGION")]
WIND_STRENGTH = [("schwach", "SCHWACH"), ("mäßig", "MAESSIG"), ("frisch", "FRISCH"),
                 ("stark", "STARK"), ("stürmisch", "STURM")]
# event verbs: gloss ("" = not signed), templates (a/b = singular/plural verb form), NP case,
# phenomena it combines with (None = all)
EVENTS = [
    ("KOMMEN", ("{time} zieht/ziehen {src} {np} heran", "{np} zieht/ziehen {time} {src} heran",
                "{src} zieht/ziehen {time} {np} heran"), "nom",
     ("REGEN", "SCHNEE", "SCHNEE REGEN", "GEWITTER", "SCHAUER", "WOLKE", "STURM")),
    ("AUSBREITEN", ("{time} breitet/breiten sich {loc} {np} aus",
                    "{np} breitet/breiten sich {time} {loc} aus",
                    "{loc} breitet/breiten sich {time} {np} aus"), "nom",
     ("REGEN", "SCHNEE", "NEBEL", "WOLKE", "GEWITTER", "SCHAUER", "SONNE")),
    ("", ("{loc} gibt es {time} {np}", "{time} gibt es {loc} {np}"), "acc", None),
    ("MOEGLICH", ("{time} kann es {loc} {np} geben", "{loc} kann es {time} {np} geben"), "acc", None),
    ("", ("{time} ist {loc} mit {np} zu rechnen", "{loc} muss {time} mit {np} gerechnet werden"),
     "dat", None),
    ("NACHLASSEN", ("{time} lässt/lassen {loc} {np} nach", "{np} lässt/lassen {time} {loc} nach"),
     "def", ("REGEN", "SCHNEE", "WIND", "STURM", "FROST", "SCHAUER", "GEWITTER")),
    ("AUFLOESEN", ("{time} löst/lösen sich {loc} {np} auf", "{np} löst/lösen sich {time} auf"),
     "def", ("NEBEL", "WOLKE")),
    ("", ("{loc} fällt {time} {np}", "{time} fällt {loc} {np}"), "nom",
     ("REGEN", "SCHNEE", "SCHNEE REGEN", "HAGEL")),
]
GREETINGS = [("guten abend liebe zuschauer", "GUT ABEND ZUSCHAUER"),
             ("guten abend meine damen und herren", "GUT ABEND DAME HERR"),
             ("hallo und guten abend", "HALLO GUT ABEND")]
FIXED_GLOSSES = "JETZT WETTER TEMPERATUR GRAD BIS MINUS MAXIMAL MINIMAL STEIGEN SINKEN KEIN " \
                "SCHOEN WIND AUSSICHT"


def _fill(template, slots, plural=False):
    """Template words with {slot} replaced by slot words ('' slots vanish, a/b picks by number)."""
    out = []
    for token in template.split():
        if token.startswith("{"):
            out.append(slots[token[1:-1]])
        else:
            out.append(token.split("/")[int(plural)] if "/" in token else token)
    return " ".join(w for w in out if w)


def _time(rng):
    """A time expression (day, time of day or both) and its glosses."""
    kind = rng.integers(3)
    if kind == 0:
        return DAY_ALONE[rng.integers(len(DAY_ALONE))]
    if kind == 1:
        return DAYTIME[rng.integers(len(DAYTIME))]
    day = ("heute", "morgen")[rng.integers(2)]
    part, part_gloss = DAYTIME_SHORT[rng.integers(len(DAYTIME_SHORT))]
    return f"{day} {part}", f"{gloss_of(day)} {part_gloss}"


def _place(rng, source=False):
    """A place phrase (locative or 'from' source) and its gloss; compass points may pair up."""
    choices = [p for p in PLACES if p[1]] if source else PLACES
    loc, src, gloss = choices[rng.integers(len(choices))]
    words = src if source else loc
    if gloss in COMPASS_GLOSS.values() and rng.random() < 0.15:
        other = COMPASS[rng.integers(len(COMPASS))]
        if COMPASS_GLOSS[other] != gloss:
            return f"{words} und {other}", f"{gloss} {COMPASS_GLOSS[other]}"
    return words, gloss


def _noun_phrase(phen, case, rng):
    """(words, phenomenon glosses, modifier glosses) of a weather noun phrase in a case."""
    gloss, nom, dat, gender, adjectives = phen
    noun = dat if case == "dat" else nom
    if case == "def":
        return f"{ARTICLE[gender]} {nom}", gloss, ""
    if adjectives and rng.random() < 0.55:
        adj = adjectives[rng.integers(len(adjectives))]
        if adj == "einzeln" and case == "dat":
            adj = "stark"
        form = adj if (adj == "viel" and gender != "pl") else adj + ENDINGS[case][gender]
        return f"{form} {noun}", gloss, INTENSITY[adj]
    return noun, gloss, ""


def _temperature(rng, low, high, with_range=True):
    """('12 grad' or '10 bis 14 grad' words, glosses) for a value drawn from [low, high]."""
    a = int(rng.integers(low, high + 1))
    a = a if a not in (1, -1) else 2  # 'ein grad' needs a different form; not generated
    if with_range and rng.random() < 0.5:
        b = a + int(rng.integers(2, 7))
        b = b if b not in (1, -1) else b + 1
        (wa, ga), (wb, gb) = number_phrase(a), number_phrase(b)
        return f"{wa} bis {wb} grad", f"{ga} BIS {gb} GRAD"
    w, g = number_phrase(a)
    return f"{w} grad", f"{g} GRAD"


def _optional(rng, p, make):
    return make() if rng.random() < p else ("", "")


def _event(rng):
    gloss_verb, templates, case, allowed = EVENTS[rng.integers(len(EVENTS))]
    phens = [p for p in PHENOMENA if allowed is None or p[0] in allowed]
    phen = phens[rng.integers(len(phens))]
    template = templates[rng.integers(len(templates))]
    first = template.split()[0]
    time = _time(rng) if first == "{time}" or rng.random() < 0.8 else ("", "")
    has_place = "{loc}" in template or "{src}" in template
    place = _place(rng, source="{src}" in template) \
        if first in ("{loc}", "{src}") or (has_place and rng.random() < 0.75) else ("", "")
    np_words, np_gloss, mod = _noun_phrase(phen, case, rng)
    slots = {"time": time[0], "loc": place[0], "src": place[0], "np": np_words}
    text = _fill(template, slots, plural=phen[3] == "pl")
    return text, " ".join(g for g in (time[1], place[1], np_gloss, mod, gloss_verb) if g)


def _negation(rng):
    phens = [p for p in PHENOMENA if p[0] in ("REGEN", "SCHNEE", "NEBEL", "FROST", "GEWITTER",
                                                "SCHAUER", "HAGEL")]
    gloss, noun, _, gender, _ = phens[rng.integers(len(phens))]
    time, place = _time(rng), _optional(rng, 0.7, lambda: _place(rng))
    template = "{loc} gibt es {time} {kein} {noun}" if place[0] and rng.random() < 0.5 else \
        "{time} gibt es {loc} {kein} {noun}"
    text = _fill(template, {"time": time[0], "loc": place[0], "kein": KEIN[gender], "noun": noun})
    return text, " ".join(g for g in (time[1], place[1], gloss, "KEIN") if g)


def _predicate(rng):
    template = ("{time} {loc} {adv} {pred}", "{time} ist es {loc} {adv} {pred}",
                "{loc} bleibt es {time} {adv} {pred}", "es wird {time} {loc} {adv} {pred}")[
        rng.integers(4)]
    first = template.split()[0]
    time = _time(rng) if first == "{time}" or rng.random() < 0.85 else ("", "")
    place = _place(rng) if first == "{loc}" or not time[0] or rng.random() < 0.7 else ("", "")
    adv = _optional(rng, 0.25, lambda: ADVERBS[rng.integers(len(ADVERBS))])
    pred = PREDICATES[rng.integers(len(PREDICATES))]
    text = _fill(template, {"time": time[0], "loc": place[0], "adv": adv[0], "pred": pred[0]})
    glosses = [g for g in (time[1], place[1], pred[1], adv[1]) if g]
    r = rng.random()
    if r < 0.3:   # "... bei temperaturen um zwanzig grad"
        if rng.random() < 0.5:
            words, g = _temperature(rng, -5, 30, with_range=False)
            text, glosses = text + " bei temperaturen um " + words, glosses + ["TEMPERATUR", g]
        else:
            words, g = _temperature(rng, -5, 25)
            text, glosses = text + " bei " + words, glosses + [g]
    elif r < 0.55:  # "... und im süden sonnig"
        place2, pred2 = _place(rng), PREDICATES[rng.integers(len(PREDICATES))]
        text, glosses = f"{text} und {place2[0]} {pred2[0]}", glosses + [place2[1], pred2[1]]
    return text, " ".join(glosses)


def _temperatures(rng):
    kind = rng.integers(4)
    time, place = _time(rng), _optional(rng, 0.7, lambda: _place(rng))
    slots = {"time": time[0], "loc": place[0]}
    if kind == 0:
        words, g = _temperature(rng, -5, 30)
        text = _fill("die temperaturen erreichen {time} {loc} {v}", dict(slots, v=words))
        glosses = (time[1], place[1], "TEMPERATUR", g)
    elif kind == 1:
        high = rng.random() < 0.5
        words, g = _temperature(rng, *((0, 30) if high else (-10, 15)))
        text = _fill("{time} {loc} {w} " + ("um {v}" if "bis" not in words else "von {v}"),
                     dict(slots, v=words, w="höchstwerte" if high else "tiefstwerte"))
        glosses = (time[1], place[1], "MAXIMAL" if high else "MINIMAL", g)
    else:
        up = kind == 2
        words, g = _temperature(rng, *((5, 30) if up else (-10, 10)), with_range=False)
        text = _fill("{time} {v} die temperaturen {loc} auf {n}",
                     dict(slots, v="steigen" if up else "sinken", n=words))
        glosses = (time[1], place[1], "TEMPERATUR", "STEIGEN" if up else "SINKEN", g)
    return text, " ".join(g for g in glosses if g)


def _wind(rng):
    time, place = _time(rng), _optional(rng, 0.6, lambda: _place(rng))
    strength, strength_gloss = WIND_STRENGTH[rng.integers(len(WIND_STRENGTH))]
    direction = COMPASS[rng.integers(len(COMPASS))]
    d_word = direction[:-2] if direction.endswith("en") else direction   # norden -> nord
    slots = {"time": time[0], "loc": place[0], "dir": d_word}
    if rng.random() < 0.5:
        text = _fill("{time} weht der wind {loc} {s} aus {dir}", dict(slots, s=strength))
    else:
        text = _fill("{time} {loc} {s} wind aus {dir}", dict(slots, s=strength + "er"))
    return text, " ".join(g for g in (time[1], place[1], "WIND", COMPASS_GLOSS[direction],
                                      strength_gloss) if g)


def _date(rng):
    day = WEEKDAYS[rng.integers(7)]
    ordinal, o_gloss = number_phrase(int(rng.integers(1, 32)), ordinal=True)
    month = MONTHS[rng.integers(12)]
    return f"{day} den {ordinal} {month}", f"{gloss_of(day)} {o_gloss} {gloss_of(month)}"


def _intro(rng):
    kind = rng.integers(5)
    target = [("morgen", "MORGEN"), ("heute nacht", "HEUTE NACHT"),
              ("die nächsten tage", "NAECHSTE TAG"), ("das wochenende", "WOCHENENDE")][
        rng.integers(4)] if kind == 0 else _date(rng)
    if kind == 1:
        target = ("morgen " + target[0], "MORGEN " + target[1])
    if rng.random() < 0.7:
        return f"und nun die wettervorhersage für {target[0]}", f"JETZT WETTER {target[1]}"
    return f"die weiteren aussichten für {target[0]}", f"AUSSICHT {target[1]}"


def _greeting(rng):
    text, gloss = GREETINGS[rng.integers(len(GREETINGS))]
    if rng.random() < 0.4:
        text, gloss = text + " und nun das wetter", gloss + " JETZT WETTER"
    return text, gloss


def _farewell(rng):
    if rng.random() < 0.5:
        return "ihnen noch einen schönen abend", "SCHOEN ABEND"
    day = WEEKDAYS[rng.integers(7)]
    return f"ihnen noch einen schönen {day}", f"SCHOEN {gloss_of(day)}"


SENTENCE_KINDS = ((_event, 0.33), (_predicate, 0.25), (_temperatures, 0.13), (_wind, 0.07),
                  (_negation, 0.05), (_intro, 0.09), (_greeting, 0.04), (_farewell, 0.04))


def make_sentence(rng):
    """One (text, gloss) pair: lower-case German text of 4-14 words and its glosses in sign order."""
    makers, p = zip(*SENTENCE_KINDS)
    while True:
        text, gloss = makers[rng.choice(len(makers), p=np.array(p) / sum(p))](rng)
        if 4 <= len(text.split()) <= 14:
            return text, gloss


def gloss_inventory():
    """Sorted tuple of every gloss the grammar can produce."""
    phrases = [g for _, g in DAY_ALONE + DAYTIME + DAYTIME_SHORT + PREDICATES + ADVERBS
               + WIND_STRENGTH + GREETINGS]
    phrases += [p[2] for p in PLACES] + [p[0] for p in PHENOMENA] + list(INTENSITY.values())
    phrases += [e[0] for e in EVENTS] + [FIXED_GLOSSES] + [gloss_of(w) for w in WEEKDAYS + MONTHS]
    phrases += [gloss_of(w) for w in NUMBERS] + ["DREISSIG", "HEUTE NACHT"]
    return tuple(sorted({g for phrase in phrases for g in phrase.split()}))



# ---------------------------------------------------------------------------------------------
# Lexicon: each gloss is a sign (hands, handshape, location, movement, palm orientation)
# ---------------------------------------------------------------------------------------------

# Finger flexions in radians. Rows: thumb (CMC opposition, MCP, IP), then index, middle, ring,
# pinky (MCP, PIP, DIP). The second value is the finger spread (abduction) in radians.
_EXT, _FIST, _CURVE = (0.0, 0.0, 0.0), (1.45, 1.6, 1.0), (0.55, 0.75, 0.45)
_BENT, _CLAW, _HALF = (1.45, 0.1, 0.05), (0.2, 1.3, 0.9), (0.8, 0.9, 0.5)
_T_OUT, _T_SIDE, _T_ACROSS = (0.0, 0.05, 0.05), (0.45, 0.15, 0.05), (1.1, 0.55, 0.7)
_T_C, _T_O = (0.75, 0.25, 0.25), (1.05, 0.45, 0.45)
HANDSHAPES = {
    "B": ((_T_SIDE, _EXT, _EXT, _EXT, _EXT), 0.0), "5": ((_T_OUT, _EXT, _EXT, _EXT, _EXT), 0.28),
    "A": ((_T_SIDE, _FIST, _FIST, _FIST, _FIST), 0.0),
    "S": ((_T_ACROSS, _FIST, _FIST, _FIST, _FIST), 0.0),
    "1": ((_T_ACROSS, _EXT, _FIST, _FIST, _FIST), 0.0),
    "V": ((_T_ACROSS, _EXT, _EXT, _FIST, _FIST), 0.3),
    "H": ((_T_ACROSS, _EXT, _EXT, _FIST, _FIST), 0.0),
    "W": ((_T_ACROSS, _EXT, _EXT, _EXT, _FIST), 0.25),
    "3": ((_T_OUT, _EXT, _EXT, _FIST, _FIST), 0.3),
    "L": ((_T_OUT, _EXT, _FIST, _FIST, _FIST), 0.05),
    "Y": ((_T_OUT, _FIST, _FIST, _FIST, _EXT), 0.25),
    "I": ((_T_ACROSS, _FIST, _FIST, _FIST, _EXT), 0.0),
    "C": ((_T_C, _CURVE, _CURVE, _CURVE, _CURVE), 0.05),
    "O": ((_T_O, _HALF, _HALF, _HALF, _HALF), 0.0),
    "bentB": ((_T_SIDE, _BENT, _BENT, _BENT, _BENT), 0.0),
    "claw": (((0.5, 0.3, 0.5), _CLAW, _CLAW, _CLAW, _CLAW), 0.25),
    "F": ((_T_O, _HALF, _EXT, _EXT, _EXT), 0.25),
}
RELAXED = (((0.4, 0.1, 0.1), (0.25, 0.3, 0.2), (0.3, 0.35, 0.2), (0.35, 0.4, 0.2),
            (0.4, 0.45, 0.2)), 0.05)
# Wrist targets in the space of a right hand (x < 0 is the hand's own side): anchored at the
# neck ("body", scaled by shoulder width) or at the face centre ("face", scaled by face size).
LOCATIONS = {
    "neutral": ("body", (-0.06, -0.20, 0.30)), "neutral_ipsi": ("body", (-0.24, -0.16, 0.26)),
    "neutral_contra": ("body", (0.10, -0.18, 0.27)), "neutral_high": ("body", (-0.08, 0.02, 0.30)),
    "neutral_low": ("body", (-0.07, -0.34, 0.25)), "chest": ("body", (-0.05, -0.17, 0.16)),
    "shoulder_contra": ("body", (0.10, -0.08, 0.13)), "chin": ("face", (-0.03, -0.22, 0.10)),
    "cheek": ("face", (-0.12, -0.12, 0.07)), "forehead": ("face", (-0.06, -0.04, 0.12)),
    "base": ("body", (-0.02, -0.12, 0.30)),
}
BASE_HAND = ("body", (-0.04, -0.24, 0.30))   # passive hand of a hand-on-hand sign
TWO_HANDED_LOCATIONS = ("neutral", "neutral_high", "neutral_low", "chest", "neutral_ipsi")
# palm orientation as (finger direction, palm normal) of a right hand
ORIENTATIONS = {
    "up_fwd": ((0, 1, 0.15), (0, 0, 1)), "up_body": ((0, 1, 0.15), (0, 0, -1)),
    "up_side": ((0, 1, 0.1), (1, 0, 0)), "fwd_down": ((0.2, 0, 1), (0, -1, 0)),
    "fwd_up": ((0.2, 0, 1), (0, 1, 0)), "fwd_side": ((0.2, 0, 1), (1, 0, 0)),
    "side_down": ((1, 0.1, 0.3), (0, -1, 0)), "side_body": ((1, 0.2, 0.2), (0, 0, -1)),
}
# hands hanging by the hips (palms to the thighs) and the idle second hand of one-handed signs
IDLE_ORIENTATIONS = {"rest": ((0, -1, 0.15), (1, 0, 0)), "wait": ((0.4, -0.3, 0.8), (0.3, -0.9, 0))}
MOVEMENTS = ("hold", "down", "forward", "outward", "arc", "circle_v", "circle_h", "tap", "zigzag",
             "wiggle", "twist", "close", "open")
REPEATED = ("circle_v", "circle_h", "tap", "zigzag", "wiggle")
MODES = ("one", "sym", "alt", "base")   # one hand, two symmetric, two alternating, hand on hand
MODE_P = (0.56, 0.2, 0.12, 0.12)


def _syllables(gloss):
    """Number of vowel groups of a gloss (drives the mouthing)."""
    groups, prev = 0, False
    for ch in gloss:
        vowel = ch in "AEIOUY"
        groups += vowel and not prev
        prev = vowel
    return max(1, min(groups, 4))


@functools.lru_cache(maxsize=1)
def gloss_lexicon():
    """{gloss: sign parameters}, drawn from LEXICON_SEED so that any two glosses differ in at
    least three of (hands, handshape, location, movement, orientation) where possible."""
    rng = np.random.default_rng(LEXICON_SEED)
    shapes, locs, oris = sorted(HANDSHAPES), sorted(set(LOCATIONS) - {"base"}), sorted(ORIENTATIONS)
    values = (MODES, shapes, sorted(LOCATIONS), MOVEMENTS, oris)
    allowed = [np.array([values[2].index(x) for x in {"one": locs, "base": ["base"]}.get(
        mode, TWO_HANDED_LOCATIONS)]) for mode in MODES]
    lexicon, codes, n = {}, np.zeros((0, 5), dtype=int), 2000
    for gloss in gloss_inventory():
        # n candidate signs; keep the first at least 3 attributes away from every sign so far,
        # else the first at least 2 away (the space of 3-apart signs gets crowded)
        mode, pick, loc = rng.choice(len(MODES), size=n, p=MODE_P), rng.integers(2 ** 30, size=n), \
            np.zeros(n, int)
        for m, options in enumerate(allowed):   # one-handed, two-handed or hand-on-hand places
            loc[mode == m] = options[pick[mode == m] % len(options)]
        cand = np.stack([mode, rng.integers(len(shapes), size=n), loc,
                         rng.integers(len(MOVEMENTS), size=n), rng.integers(len(oris), size=n)], 1)
        dist = (cand[:, None, :] != codes[None]).sum(-1).min(1) if len(codes) else np.full(n, 5)
        best = int(np.argmax(dist >= 3)) if (dist >= 3).any() else int(np.argmax(dist >= 2))
        codes = np.vstack([codes, cand[best]])
        key = tuple(v[c] for v, c in zip(values, cand[best]))
        mode, shape, loc, move, ori = key
        end = shape
        if move in ("close", "open"):
            end = "S" if shape not in ("S", "A") else "5"
            shape, end = (shape, end) if move == "close" else (end, shape)
        vowels = gloss.replace("AE", "E").replace("OE", "O").replace("UE", "U")
        lexicon[gloss] = {
            "mode": mode, "shape": shape, "end_shape": end, "location": loc, "movement": move,
            "orientation": ori, "frames": int(rng.integers(8, 13)) + 3 * (move in REPEATED),
            "amplitude": float(rng.uniform(0.8, 1.2)), "repeats": int(rng.integers(2, 4)),
            "syllables": _syllables(gloss), "rounding": 0.7 * any(c in "OU" for c in vowels),
            "brow": float(rng.choice([0.0, 0.0, 1.0, -1.0])),
            "head": ("shake" if gloss == "KEIN" else
                     ("none", "none", "none", "nod", "tilt")[rng.integers(5)]),
            "lean": float(rng.choice([0.0, 0.0, 0.04, -0.03])),
        }
    return lexicon


def make_signers(count):
    """`count` signers "Signer01", ... with their own body, hand and face size, tempo, amplitude
    and tracking noise (drawn from SIGNER_SEED: a signer is the same person in every corpus)."""
    if not 1 <= count <= 99:
        raise ValueError(f"signers must be between 1 and 99, got {count}")
    signers = []
    for i in range(count):
        r = np.random.default_rng([SIGNER_SEED, i])
        width = r.uniform(0.32, 0.40)
        arm = r.uniform(0.93, 1.07) * width / 0.36
        signers.append({
            "name": f"Signer{i + 1:02d}", "shoulder_width": width, "upper_arm": 0.29 * arm,
            "forearm": 0.26 * arm, "hand_scale": r.uniform(0.9, 1.1) * width / 0.36,
            "face_scale": r.uniform(0.9, 1.1) * width / 0.36,
            "torso": r.uniform(0.47, 0.55) * width / 0.36, "hip_width": r.uniform(0.55, 0.68) * width,
            "tempo": r.uniform(0.8, 1.2), "amplitude": r.uniform(0.85, 1.2),
            "jitter": r.uniform(0.0015, 0.004), "expressive": r.uniform(0.6, 1.2),
        })
    return signers


# ---------------------------------------------------------------------------------------------
# Kinematics: hand forward kinematics, two-link arm IK, face blendshapes
# ---------------------------------------------------------------------------------------------

# Right hand at scale 1, metres, hand frame: x toward the thumb, y along the fingers, z out of
# the palm. Finger MCP positions, phalanx lengths, resting splay angle and splay gain.
FINGER_MCP = np.array([[0.026, 0.094, 0.0], [0.004, 0.097, 0.0], [-0.016, 0.090, 0.0],
                       [-0.034, 0.080, 0.0]])
FINGER_BONES = np.array([[0.042, 0.025, 0.021], [0.046, 0.028, 0.023], [0.043, 0.027, 0.022],
                         [0.034, 0.020, 0.019]])
FINGER_SPLAY = np.array([0.06, 0.0, -0.06, -0.14])
SPLAY_GAIN = np.array([1.0, 0.3, -0.5, -1.0])
THUMB_CMC = np.array([0.020, 0.028, 0.012])
THUMB_BONES = np.array([0.042, 0.033, 0.028])
THUMB_OUT = np.array([0.75, 0.62, 0.20]) / np.linalg.norm([0.75, 0.62, 0.20])   # abducted
THUMB_IN = np.array([-0.15, 0.55, 0.82]) / np.linalg.norm([-0.15, 0.55, 0.82])  # opposed
THUMB_CURL = np.array([-0.7, 0.0, 0.7]) / np.linalg.norm([-0.7, 0.0, 0.7])      # flexion target


def _turn_toward(v, w, angle):
    """Rotate unit vectors v toward w (in their common plane) by `angle` radians."""
    w_perp = w - np.sum(w * v, -1, keepdims=True) * v
    w_perp = w_perp / np.linalg.norm(w_perp, axis=-1, keepdims=True)
    return np.cos(angle)[..., None] * v + np.sin(angle)[..., None] * w_perp


def hand_pose(flexions, spread, wrist, rotation, scale=1.0):
    """21 MediaPipe hand landmarks of a right hand by forward kinematics.

    flexions (..., 5, 3): thumb (CMC opposition, MCP, IP) and fingers (MCP, PIP, DIP) radians;
    spread (...): finger abduction; wrist (..., 3); rotation (..., 3, 3) hand frame -> world;
    scale: bone lengths relative to the reference hand. Returns (..., 21, 3).
    """
    flexions, spread = np.asarray(flexions, float), np.asarray(spread, float)
    batch = flexions.shape[:-2]
    local = np.zeros(batch + (21, 3))
    # fingers: each phalanx turns from the splayed palm direction toward the palm normal (+z)
    phi = FINGER_SPLAY + spread[..., None] * SPLAY_GAIN                      # (..., 4)
    palm_dir = np.stack([np.sin(phi), np.cos(phi), np.zeros_like(phi)], -1)  # (..., 4, 3)
    angle = np.cumsum(flexions[..., 1:, :], -1)                              # (..., 4, 3)
    seg = (np.cos(angle)[..., None] * palm_dir[..., None, :]
           + np.sin(angle)[..., None] * np.array([0.0, 0.0, 1.0]))           # (..., 4, 3, 3)
    joints = FINGER_MCP[:, None, :] + np.cumsum(FINGER_BONES[..., None] * seg, -2)
    for f, chain in enumerate(tuple(HAND_FINGERS.values())[1:]):
        local[..., chain[0], :] = FINGER_MCP[f]
        local[..., chain[1]:chain[3] + 1, :] = joints[..., f, :, :]
    # thumb: opposition turns the metacarpal from THUMB_OUT toward THUMB_IN, then MCP and IP curl
    thumb = HAND_FINGERS["thumb"]
    meta = _turn_toward(np.broadcast_to(THUMB_OUT, batch + (3,)), THUMB_IN, flexions[..., 0, 0])
    curl = np.broadcast_to(THUMB_CURL, batch + (3,))
    prox = _turn_toward(meta, curl, flexions[..., 0, 1])
    dist = _turn_toward(meta, curl, flexions[..., 0, 1] + flexions[..., 0, 2])
    local[..., thumb[0], :] = THUMB_CMC
    local[..., thumb[1], :] = THUMB_CMC + THUMB_BONES[0] * meta
    local[..., thumb[2], :] = local[..., thumb[1], :] + THUMB_BONES[1] * prox
    local[..., thumb[3], :] = local[..., thumb[2], :] + THUMB_BONES[2] * dist
    world = (scale * local) @ np.swapaxes(rotation, -1, -2)                 # (..., 21, 3)
    return world + np.asarray(wrist)[..., None, :]


def reach(shoulder, wrist, upper, fore):
    """Pull wrist targets into the annulus an arm of segment lengths (upper, fore) can reach."""
    v = wrist - shoulder
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    return shoulder + v / d * np.clip(d, abs(upper - fore) + 1e-3, upper + fore - 1e-3)


def arm_ik(shoulder, wrist, upper, fore, pole):
    """Elbow of a two-link arm ending at a reachable wrist, bent toward the `pole` direction."""
    v = wrist - shoulder
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    n = v / d
    a = (upper ** 2 - fore ** 2 + d ** 2) / (2 * d)        # distance along n to the elbow circle
    h = np.sqrt(np.maximum(upper ** 2 - a ** 2, 0.0))      # radius of the elbow circle
    p = pole - np.sum(pole * n, -1, keepdims=True) * n
    return shoulder + a * n + h * p / np.linalg.norm(p, axis=-1, keepdims=True)


def _contour(name):
    return np.array(FACE_CONTOURS_178[name]) - ARTICULATORS["face"].start


@functools.lru_cache(maxsize=1)
def face_model():
    """Neutral face (128, 3) around the face centre (metres) and 5 blendshapes (5, 128, 3):
    mouth open, lip rounding, brow raise, brow furrow, eye blink."""
    face, shapes = np.zeros((128, 3)), np.zeros((5, 128, 3))
    a = 2 * np.pi * np.arange(36) / 36                     # face oval from the forehead, clockwise
    oval = _contour("face_oval")
    face[oval] = np.stack([np.sin(a) * (0.068 + 0.006 * np.cos(a)), 0.10 * np.cos(a),
                           -0.035 * np.abs(np.sin(a))], -1)
    jaw = np.clip((-0.05 - face[oval, 1]) / 0.05, 0, 1)    # 1 at the chin, 0 above the mouth
    shapes[0, oval, 1] = -0.010 * jaw
    for side, eye in ((-1, "right_eye"), (1, "left_eye")):
        k = np.arange(16)                                   # outer corner, lower lid, upper lid
        idx = _contour(eye)
        face[idx] = np.stack([side * (0.032 + 0.014 * np.cos(np.pi * k / 8)),
                              0.028 - 0.005 * np.sin(np.pi * k / 8), np.zeros(16)], -1)
        shapes[4, idx, 1] = np.where(k > 8, 1.0, 0.3) * (0.0265 - face[idx, 1])  # lids meet
        for row, dy in (("upper", 0.0), ("lower", -0.004)):
            brow = _contour(f"{'right' if side < 0 else 'left'}_eyebrow_{row}")
            t = np.arange(5) / 4                            # outer -> inner
            face[brow] = np.stack([side * (0.052 - 0.036 * t), 0.048 + dy + 0.006 * np.sin(
                np.pi * (t + 0.2) / 1.4), np.full(5, 0.004)], -1)
            shapes[2, brow, 1] = 0.007
            shapes[3, brow] = np.stack([-side * 0.003 * t, -0.002 - 0.003 * t, np.zeros(5)], -1)
    for name, width, low, up in (("lips_outer", 0.026, 0.011, 0.009), ("lips_inner", 0.019, 0.002,
                                                                       0.002)):
        k = np.arange(20)                                   # right corner, lower lip, upper lip
        idx = _contour(name)
        s = np.sin(np.pi * k / 10)
        face[idx] = np.stack([-width * np.cos(np.pi * k / 10),
                              -0.050 - np.where(s > 0, low, up) * s, np.full(20, 0.008)], -1)
        shapes[0, idx, 1] = np.where(s > 0, -0.013 * s, 0.001 * -s)
        shapes[1, idx, 0] = -0.35 * face[idx, 0]
        shapes[1, idx, 1] = -0.003 * s
        shapes[1, idx, 2] = 0.008
    return face, shapes


# ---------------------------------------------------------------------------------------------
# Rendering a gloss sequence
# ---------------------------------------------------------------------------------------------

def _minimum_jerk(u):
    return 10 * u ** 3 - 15 * u ** 4 + 6 * u ** 5


def _euler(angles):
    """Rotation matrices (..., 3, 3) from (pitch about x, yaw about y, roll about z)."""
    return Rotation.from_euler("YXZ", np.asarray(angles)[..., [1, 0, 2]].reshape(-1, 3)).as_matrix(
    ).reshape(angles.shape[:-1] + (3, 3))


@functools.lru_cache(maxsize=None)
def _orientation(finger, normal):
    """Hand rotation whose fingers point along `finger` and whose palm faces `normal`."""
    finger = np.array(finger, float) / np.linalg.norm(finger)
    normal = np.array(normal, float) - np.dot(normal, finger) * finger
    normal /= np.linalg.norm(normal)
    return Rotation.from_matrix(np.stack([np.cross(finger, normal), finger, normal], -1))


def _shape_vector(name):
    flex, spread = HANDSHAPES[name] if isinstance(name, str) else name
    return np.append(np.ravel(flex), spread)               # (16,)


def _geometry(signer):
    """Anchor points of a signer in the torso frame (right-hand space for hand targets)."""
    body, face_s = signer["shoulder_width"] / 0.36, signer["face_scale"]
    face_centre = np.array([0.0, 0.12 * body + 0.10 * face_s, 0.06 * body])
    shoulder = np.array([-signer["shoulder_width"] / 2, 0.0, 0.0])
    arm = signer["upper_arm"] + signer["forearm"]
    return {"body": body, "face_scale": face_s, "face_centre": face_centre, "shoulder": shoulder,
            "rest": shoulder + np.array([0.03, -0.86 * arm, 0.10]),
            "wait": np.array([-0.13, -0.36, 0.18]) * body}


def _anchor(spec, geo):
    anchor, offset = spec
    if anchor == "face":
        return geo["face_centre"] + np.array(offset) * geo["face_scale"]
    return np.array(offset) * geo["body"]


def _movement(kind, u, amp, repeats):
    """Path offset (n, 3), twist about the finger axis (n,), handshape blend (n,) and finger
    wiggle (n, 5, 3) of a movement at sign times u in [0, 1]."""
    n = len(u)
    s = _minimum_jerk(u)
    off, twist, blend, wiggle = np.zeros((n, 3)), np.zeros(n), np.zeros(n), np.zeros((n, 5, 3))
    ring = 2 * np.pi * s
    if kind == "hold":
        off[:, 2] = 0.2 * amp * np.sin(np.pi * u)
    elif kind == "down":
        off[:, 1] = amp * (0.5 - s)
    elif kind == "forward":
        off[:, 2] = amp * (s - 0.5)
    elif kind == "outward":
        off[:, 0] = -amp * (s - 0.5)
    elif kind == "arc":
        off[:, 0], off[:, 1] = -amp * (s - 0.5), 0.45 * amp * np.sin(np.pi * s)
    elif kind == "circle_v":
        off[:, 0], off[:, 1] = 0.4 * amp * np.sin(ring), 0.4 * amp * np.cos(ring)
    elif kind == "circle_h":
        off[:, 0], off[:, 2] = 0.4 * amp * np.sin(ring), 0.4 * amp * np.cos(ring)
    elif kind == "tap":
        off[:, 1] = -0.3 * amp * (1 - np.cos(2 * np.pi * repeats * u)) / 2
    elif kind == "zigzag":
        off[:, 0], off[:, 1] = 0.3 * amp * np.sin(2 * np.pi * repeats * u), amp * (0.5 - u)
    elif kind == "wiggle":
        phase = 2 * np.pi * 3 * u[:, None] + np.arange(4) * 0.8
        wiggle[:, 1:, 0] = 0.4 * (1 - np.cos(phase)) / 2
    elif kind == "twist":
        twist = 1.3 * (s - 0.5)
    else:   # close / open: the handshape changes along the sign
        blend = s
        off[:, 2] = 0.15 * amp * (s - 0.5)
    return off, twist, blend, wiggle


def _hand_piece(sign, role, n, geo, signer, rng):
    """Tracks of one hand during one sign: wrist (n, 3), quaternion (n, 4), shape (n, 16)."""
    if role in ("rest", "wait"):
        return {"wrist": np.tile(geo[role], (n, 1)),
                "quat": np.tile(_orientation(*IDLE_ORIENTATIONS[role]).as_quat(), (n, 1)),
                "shape": np.tile(_shape_vector(RELAXED), (n, 1))}
    u = np.linspace(0.0, 1.0, n)
    if role == "base":
        wrist = _anchor(BASE_HAND, geo) + rng.normal(0, 0.006, 3)
        return {"wrist": np.tile(wrist, (n, 1)),
                "quat": np.tile(_orientation(*ORIENTATIONS["fwd_up"]).as_quat(), (n, 1)),
                "shape": np.tile(_shape_vector("B"), (n, 1))}
    if role == "alternate":   # the second hand moves half a cycle (or backwards) behind
        u = (u + (0.5 / sign["repeats"] if sign["movement"] == "tap" else 0.5)) % 1.0 \
            if sign["movement"] in REPEATED else 1.0 - u
    target = _anchor(LOCATIONS[sign["location"]], geo)
    if sign["mode"] in ("sym", "alt") and sign["location"] != "neutral_ipsi":
        target = target + np.array([-0.05 * geo["body"], 0, 0])  # keep the two hands apart
    target = target + rng.normal(0, 0.008, 3) * geo["body"]
    amp = 0.08 * geo["body"] * sign["amplitude"] * signer["amplitude"] * rng.uniform(0.9, 1.1)
    off, twist, blend, wiggle = _movement(sign["movement"], u, amp, sign["repeats"])
    start, end = _shape_vector(sign["shape"]), _shape_vector(sign["end_shape"])
    shape = start + blend[:, None] * (end - start) + rng.normal(0, 0.04, 16)
    shape[:, :15] += wiggle.reshape(n, 15)
    rot = Rotation.from_rotvec(rng.normal(0, 0.05, 3)) * _orientation(
        *ORIENTATIONS[sign["orientation"]])
    quat = (rot * Rotation.from_rotvec(twist[:, None] * np.array([0.0, 1.0, 0.0]))).as_quat()
    return {"wrist": target + off, "quat": quat, "shape": shape}


def _nonmanual_piece(sign, n, signer, rng):
    """Face blendshape weights (n, 5), head angles (n, 3) and torso angles (n, 3) of a sign."""
    face, head, torso = np.zeros((n, 5)), np.zeros((n, 3)), np.zeros((n, 3))
    if sign is None:
        return {"face": face, "head": head, "torso": torso}
    u = np.linspace(0.0, 1.0, n)
    hump = np.sin(np.pi * u)
    expressive = signer["expressive"] * rng.uniform(0.8, 1.1)
    face[:, 0] = 0.8 * expressive * np.abs(np.sin(np.pi * sign["syllables"] * u))  # mouthing
    face[:, 1] = sign["rounding"] * hump
    face[:, 2] = max(sign["brow"], 0.0) * expressive * hump
    face[:, 3] = max(-sign["brow"], 0.0) * expressive * hump
    wave = np.sin(2 * np.pi * 2 * u)
    if sign["head"] == "nod":
        head[:, 0] = 0.08 * expressive * wave
    elif sign["head"] == "shake":
        head[:, 1] = 0.15 * expressive * wave
    elif sign["head"] == "tilt":
        head[:, 2] = 0.07 * expressive * hump
    torso[:, 0] = sign["lean"] * hump
    return {"face": face, "head": head, "torso": torso}


def _assemble(pieces, gaps, key):
    """Concatenate pieces[i][key] with minimum-jerk transitions of gaps[i] frames in between."""
    out = [pieces[0][key]]
    for gap, piece in zip(gaps, pieces[1:]):
        a, b = out[-1][-1], piece[key]
        if key.endswith("quat") and np.dot(a, b[0]) < 0:  # stay on one quaternion hemisphere
            b = -b
        w = _minimum_jerk(np.arange(1, gap + 1) / (gap + 1)).reshape((-1,) + (1,) * a.ndim)
        out += [a + w * (b[0] - a), b]
    return np.concatenate(out)


def _noise(rng, shape, sigma):
    """Slightly correlated tracking noise of unit standard deviation (before scaling)."""
    x = gaussian_filter1d(rng.normal(size=shape), 0.8, axis=0)
    return x / np.sqrt(1 / (2 * np.sqrt(np.pi) * 0.8)) * sigma


def render_sign_sequence(glosses, signer, rng, return_spans=False):
    """Pose sequence (N, 178, 3) float32 of a gloss sequence signed by `signer`.

    glosses: a space-separated string or a list of glosses of gloss_lexicon(); signer: one of
    make_signers(); rng: numpy Generator (tempo, amplitude, targets and noise of this
    realization). With return_spans=True also returns [(gloss, first_frame, end_frame), ...].
    """
    lexicon = gloss_lexicon()
    glosses = glosses.split() if isinstance(glosses, str) else list(glosses)
    if not glosses:
        raise ValueError("render_sign_sequence needs at least one gloss")
    unknown = [g for g in glosses if g not in lexicon]
    if unknown:
        raise ValueError(f"glosses not in the lexicon: {unknown}")
    geo, tempo = _geometry(signer), signer["tempo"]
    frames = [int(np.clip(round(lexicon[g]["frames"] * tempo * rng.uniform(0.88, 1.12)),
                          *SIGN_FRAMES)) for g in glosses]
    rests = rng.integers(2, 5, size=2)
    # per-piece tracks: rest, sign 1, ..., sign K, rest (hands in their own right-hand space)
    pieces = []
    for sign, n in [(None, rests[0])] + [(lexicon[g], f) for g, f in zip(glosses, frames)] \
            + [(None, rests[1])]:
        mode = sign["mode"] if sign else "rest"
        roles = {"rest": ("rest", "rest"), "one": ("active", "wait"), "sym": ("active", "active"),
                 "alt": ("active", "alternate"), "base": ("active", "base")}[mode]
        piece = _nonmanual_piece(sign, n, signer, rng)
        for side, role in zip("rl", roles):
            for key, value in _hand_piece(sign, role, n, geo, signer, rng).items():
                piece[f"{key}_{side}"] = value
        pieces.append(piece)
    # transitions: a few frames, longer for long paths (peak hand speed about 2.5 m/s)
    gaps = []
    for k, (before, after) in enumerate(zip(pieces[:-1], pieces[1:])):
        low, high = (5, 7) if k in (0, len(pieces) - 2) else (2, 5)
        path = max(np.linalg.norm(after[f"wrist_{s}"][0] - before[f"wrist_{s}"][-1]) for s in "rl")
        gaps.append(max(int(round(rng.uniform(low, high) * tempo)),
                        int(np.ceil(path * 1.875 / 0.1)) - 1))
    tracks = {key: _assemble(pieces, gaps, key) for key in pieces[0]}
    total = len(tracks["face"])
    # co-articulation: smooth every track a little, then add this signer's tracking noise
    jitter = signer["jitter"]
    for key in tracks:
        tracks[key] = gaussian_filter1d(tracks[key], 1.2 if key != "face" else 0.7, axis=0,
                                        mode="nearest")
    for side in "rl":
        tracks[f"wrist_{side}"] += _noise(rng, (total, 3), jitter)
        tracks[f"shape_{side}"] += _noise(rng, (total, 16), 8 * jitter)
        quat = tracks[f"quat_{side}"]
        quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
        tracks[f"quat_{side}"] = (Rotation.from_rotvec(_noise(rng, (total, 3), 5 * jitter))
                                  * Rotation.from_quat(quat)).as_matrix()
    tracks["head"] += _noise(rng, (total, 3), 3 * jitter) + np.sin(
        2 * np.pi * np.arange(total)[:, None] / rng.uniform(40, 90, 3)) * 0.02
    tracks["torso"] += np.sin(2 * np.pi * np.arange(total)[:, None] / rng.uniform(60, 120, 3)) \
        * np.array([0.01, 0.015, 0.01])
    blink = np.zeros(total)
    for start in np.cumsum(rng.integers(30, 90, size=total // 30 + 1)):
        blink[start:start + 4] = (0.6, 1.0, 1.0, 0.5)[:len(blink[start:start + 4])]
    tracks["face"][:, 4] = np.maximum(tracks["face"][:, 4], blink)
    poses = _skeleton(tracks, signer, geo)
    poses += _noise(rng, (total, 1, 3), 0.5 * jitter)             # whole-body tracking shift
    poses = poses.astype(np.float32)
    if not return_spans:
        return poses
    spans, start = [], 0
    for k, piece in enumerate(pieces):   # piece k begins after pieces 0..k-1 and gaps 0..k-1
        if 0 < k < len(pieces) - 1:
            spans.append((glosses[k - 1], start, start + len(piece["face"])))
        start += len(piece["face"]) + (gaps[k] if k < len(gaps) else 0)
    return poses, spans


def _skeleton(tracks, signer, geo):
    """Joint positions (T, 178, 3) from the assembled tracks."""
    total = len(tracks["face"])
    poses = np.zeros((total, NUM_JOINTS, 3))
    mirror = np.array([-1.0, 1.0, 1.0])
    upper, fore = signer["upper_arm"], signer["forearm"]
    pole = np.array([-0.4, -1.0, -0.3])   # elbows hang down, out and slightly back
    for side, (s_idx, e_idx, w_idx), hand in (("r", (0, 1, 2), ARTICULATORS["right_hand"]),
                                              ("l", (3, 4, 5), ARTICULATORS["left_hand"])):
        flip = mirror if side == "l" else 1.0
        wrist = reach(geo["shoulder"], tracks[f"wrist_{side}"], upper, fore)        # (T, 3)
        shape = tracks[f"shape_{side}"]
        points = hand_pose(shape[:, :15].reshape(-1, 5, 3), shape[:, 15], wrist,
                           tracks[f"quat_{side}"], signer["hand_scale"])           # (T, 21, 3)
        elbow = arm_ik(geo["shoulder"], wrist, upper, fore, pole)
        poses[:, s_idx] = geo["shoulder"] * flip
        poses[:, e_idx] = elbow * flip
        poses[:, w_idx] = wrist * flip
        poses[:, hand] = points * flip
    face, shapes = face_model()
    face = face + (tracks["face"] @ shapes.reshape(5, -1)).reshape(total, 128, 3)   # (T, 128, 3)
    pivot = np.array([0.0, 0.10 * geo["body"], 0.0])
    head = _euler(tracks["head"])                                                   # (T, 3, 3)
    centre = geo["face_centre"] - pivot
    poses[:, ARTICULATORS["face"]] = pivot + (centre + geo["face_scale"] * face) @ np.swapaxes(
        head, 1, 2)
    # the torso leans and turns about the hip centre; the hips stay where they are
    hip_y = -signer["torso"]
    hips = np.array([[-signer["hip_width"] / 2, hip_y, -0.02], [signer["hip_width"] / 2, hip_y,
                                                                  -0.02]])
    centre = np.array([0.0, hip_y, -0.02])
    torso = _euler(tracks["torso"])
    poses = centre + (poses - centre) @ np.swapaxes(torso, 1, 2)
    poses[:, 6:8] = hips
    return poses


# ---------------------------------------------------------------------------------------------
# The corpus: three splits in the release format
# ---------------------------------------------------------------------------------------------

def make_splits(seed, num_train, num_dev, num_test):
    """{split: [(text, gloss), ...]}: train sentences may repeat; dev and test sentences are new
    texts (never in train nor in each other) whose glosses all occur in train."""
    rng = np.random.default_rng([seed, 0])
    splits = {"train": [make_sentence(rng) for _ in range(num_train)]}
    seen_texts = {text for text, _ in splits["train"]}
    seen_glosses = {g for _, gloss in splits["train"] for g in gloss.split()}
    for split, count in (("dev", num_dev), ("test", num_test)):
        splits[split] = []
        for _ in range(1000 * count + 1000):
            if len(splits[split]) == count:
                break
            text, gloss = make_sentence(rng)
            if text not in seen_texts and seen_glosses.issuperset(gloss.split()):
                seen_texts.add(text)
                splits[split].append((text, gloss))
        else:
            raise ValueError(f"could not draw {count} unseen {split} sentences from a train set "
                             f"of {num_train}; use more training samples")
    return splits


def write_corpus(out_dir, seed=0, num_train=DEFAULT_SIZES["train"], num_dev=DEFAULT_SIZES["dev"],
                 num_test=DEFAULT_SIZES["test"], signers=6):
    """Write train.pt, dev.pt and test.pt (REFERENCE.md §1 format) to out_dir; returns
    {split: number of samples}. Same arguments give bit-identical files."""
    for name, value, low in (("seed", seed, 0), ("num_train", num_train, 1),
                             ("num_dev", num_dev, 0), ("num_test", num_test, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    people = make_signers(signers)
    splits = make_splits(seed, num_train, num_dev, num_test)
    os.makedirs(out_dir, exist_ok=True)
    for split_id, (split, sentences) in enumerate(splits.items()):
        samples = {}
        for i, (text, gloss) in enumerate(sentences):
            rng = np.random.default_rng([seed, 1 + split_id, i])   # one stream per sample
            signer = people[rng.integers(len(people))]
            name = f"synthetic_{split}_{i:06d}"
            poses = render_sign_sequence(gloss, signer, rng)
            samples[name] = {"name": name, "text": text, "gloss": gloss,
                             "poses_3d": torch.from_numpy(poses), "speaker": signer["name"]}
        path = os.path.join(out_dir, f"{split}.pt")
        torch.save(samples, path + ".tmp")
        os.replace(path + ".tmp", path)
    return {split: len(sentences) for split, sentences in splits.items()}
