"""German weather sentences and their glosses in sign order: the language of the built-in corpus.

Time first, place before weather, modifiers after the noun, function words not signed (the
order of PHOENIX-2014T's DGS glosses). `make_sentence(rng)` draws one (text, gloss) pair;
`gloss_inventory()` lists every gloss the grammar can produce.
"""
import numpy as np

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
