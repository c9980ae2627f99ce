"""A small SQuAD-v1.1-format data set about an invented world, generated from templates.

The workshop must also run where the Hugging Face Hub cannot be reached (a laptop, an offline compute node,
the test suite), so it carries its own question-answering sample. None of it is SQuAD text: towns, rivers,
guilds, inventors and instruments are made up from the word lists below. Each paragraph states a few facts
and asks 1-3 questions whose answer is an exact, unique span of that paragraph, so a tiny model can learn
the one skill the lesson needs: find the right span and copy it.

    python -m workshop.sample_data sample.json --seed 0 --paragraphs 200

The same seed always gives byte-identical JSON.
"""

import argparse
import json
import random

# Names are glued from syllables so that short lists still give hundreds of distinct names.
TOWN_STARTS = ("Ash", "Bram", "Cor", "Dun", "Elm", "Fen", "Gal", "Hol", "Ivel", "Kest", "Lor", "Marr", "Nor",
               "Oak", "Pell", "Quen", "Ros", "Sel", "Tam", "Ulm", "Vey", "Wick", "Yar", "Zen", "Brin", "Cald",
               "Drey", "Orm", "Thorn", "Wend")
TOWN_ENDS = ("ford", "holm", "mere", "wick", "by", "stead", "haven", "ton", "moor", "gate", "field", "brook",
             "combe", "ness")
RIVER_STARTS = ("Ar", "Bel", "Cal", "Dar", "El", "Fir", "Gor", "Har", "Il", "Jen", "Kal", "Lem", "Mor", "Nel",
                "Or", "Per", "Sar", "Tel", "Ur", "Vel")
RIVER_ENDS = ("ine", "ova", "andel", "isk", "ent", "urn", "ay", "ith")
FIRST_NAMES = ("Ada", "Bertil", "Carys", "Dorian", "Edda", "Florin", "Greta", "Hale", "Ines", "Joran", "Kaia",
               "Lucan", "Mirela", "Nils", "Odile", "Piet", "Runa", "Silas", "Tova", "Urban", "Vesna", "Wilmot",
               "Ysolde", "Zoran")
FAMILY_STARTS = ("Abel", "Brack", "Corm", "Dal", "Eber", "Frey", "Gund", "Hask", "Ingle", "Jass", "Kor", "Lind",
                 "Mott", "Nyl", "Osk", "Pren", "Rask", "Stav", "Tulk", "Varn")
FAMILY_ENDS = ("er", "ley", "wood", "stone", "by", "mark", "ham", "ridge")
INSTRUMENT_STARTS = ("kor", "vel", "tam", "lir", "zen", "bor", "sha", "mal", "dru", "fen")
INSTRUMENT_ENDS = ("rin", "dola", "bane", "tuk", "ello", "vash", "mira", "pon")
GUILD_WORDS = ("Lantern", "Anvil", "Shuttle", "Kiln", "Compass", "Bellows", "Spindle", "Chisel", "Quill",
               "Ladle", "Plumb", "Tiller")
PROVINCES = ("Westmarch", "Hollowreach", "the Amber Coast", "Greyvale", "Lowfold", "the Northern Shires",
             "Brightwater", "Stonecross")
HILLS = ("Crowberry", "Windle", "Harrow", "Morrow", "Silverback", "Fallowmere", "Cairnfell", "Dimmock")
SEAS = ("Glass", "Pearl", "Salt", "Tern", "Murmur", "Lantern")
HALLS = ("the Old Corn Exchange", "the Weavers' Hall", "the Bell Tower", "the Riverside Chapel",
         "the Market Loft", "the Granary")
STREETS = ("Tallow", "Copper", "Mill", "Rook", "Lantern", "Cobble", "Anchor", "Juniper", "Saddler", "Wharf")
NEIGHBOURS = ("the town well", "the cloth market", "the ferry steps", "the old mill", "the grain store",
              "the watch house")
COLOURS = ("amber", "crimson", "ochre", "teal", "violet", "saffron", "slate grey", "olive", "indigo",
           "rust red", "pale blue", "emerald")
TRADES = ("clockmaker", "glassblower", "weaver", "cooper", "tanner", "potter", "ropemaker", "bell founder",
          "miller", "mapmaker")
MATERIALS = ("brass", "copper", "glass", "oak", "tin", "silver", "bone", "walnut")
DEVICES = ("loom", "lantern", "compass", "pump", "barometer", "kiln", "printing press", "music box",
           "water clock", "telescope")
# An instrument's kind decides what it has a number of.
INSTRUMENT_KINDS = {"harp": "strings", "fiddle": "strings", "lute": "strings", "zither": "strings",
                    "flute": "finger holes", "pipe": "finger holes", "horn": "valves", "drum": "tuning pegs"}
ANIMALS = ("heron", "otter", "stag", "badger", "kingfisher", "fox", "owl", "salmon", "hare", "swan")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SEASONS = ("spring", "summer", "autumn", "winter")
FAIRS = ("lantern", "harvest", "kite", "cheese", "boat", "apple", "candle", "ribbon")
CARGOES = ("salt", "timber", "wool", "slate", "barley", "copper ore", "cider", "peat", "flax", "marble")
SIZES = ("small", "busy", "quiet", "walled", "hill", "market")
COUNTS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
PRONOUNS = (("She", "she", "Her"), ("He", "he", "His"))
# Once the glued town names are used up, each further round of articles prefixes them ("Upper Ashford").
TOWN_PREFIXES = ("", "Upper ", "Lower ", "East ", "West ", "North ", "South ", "Great ", "Little ", "Old ", "New ",
                 "Nether ")
MAX_PARAGRAPHS = len(TOWN_PREFIXES) * len(TOWN_STARTS) * len(TOWN_ENDS)  # one article, at least one paragraph, a town

WORD_LISTS = (TOWN_STARTS, TOWN_ENDS, RIVER_STARTS, RIVER_ENDS, FIRST_NAMES, FAMILY_STARTS, FAMILY_ENDS,
              INSTRUMENT_STARTS, INSTRUMENT_ENDS, GUILD_WORDS, PROVINCES, HILLS, SEAS, HALLS, STREETS, NEIGHBOURS,
              COLOURS, TRADES, MATERIALS, DEVICES, tuple(INSTRUMENT_KINDS), tuple(INSTRUMENT_KINDS.values()),
              ANIMALS, WEEKDAYS, SEASONS, FAIRS, CARGOES, SIZES, COUNTS)


def all_words():
    """Every entry of every word list, sorted (the tokenizer trains on these too)."""
    return sorted({word for words in WORD_LISTS for word in words})


def _town(rng):
    return rng.choice(TOWN_STARTS) + rng.choice(TOWN_ENDS)


def _person(rng):
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(FAMILY_STARTS)}{rng.choice(FAMILY_ENDS)}"


def _years(rng, n):
    """n distinct years, in order, so that "founded" comes before "finished"."""
    return [str(year) for year in sorted(rng.sample(range(1480, 1890), n))]


def _a(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


# Each paragraph kind draws its facts for one article's town (the draws' order is the sample's: keep it), and its
# text and candidate questions are templates over those facts, one "question | answer" a line. The candidates
# outnumber the 1-3 asked, so the same paragraph kind asks different things.

def _founding(rng, town):
    founded, bridge = _years(rng, 2)
    founder, colour, fair, season = _person(rng), rng.choice(COLOURS), rng.choice(FAIRS), rng.choice(SEASONS)
    return dict(founded=founded, bridge=bridge, founder=founder, colour=colour, fair=fair, season=season,
                a_size=_a(rng.choice(SIZES)))


FOUNDING = ("{name} is {a_size} town on the {river} River in the province of {province}. "
            "It was founded in {founded} by {founder}, and its stone bridge was finished in {bridge}. "
            "The town is known for its {colour} roofs and for the {fair} fair held every {season}.", """
    On which river does {name} stand? | {river}
    In what year was {name} founded? | {founded}
    Who founded {name}? | {founder}
    When was the stone bridge in {name} finished? | {bridge}
    What colour are the roofs of {name}? | {colour}
    In which province is {name}? | {province}
    Which fair is held in {name} every {season}? | {fair} fair""")


def _inventor(rng, town):
    born = rng.randint(1480, 1850)
    born, built = str(born), str(born + rng.randint(20, 50))
    person, trade = _person(rng), rng.choice(TRADES)
    device = f"{rng.choice(MATERIALS)} {rng.choice(DEVICES)}"
    street = f"{rng.choice(STREETS)} Street"
    subject, pronoun, possessive = rng.choice(PRONOUNS)
    return dict(born=born, built=built, person=person, trade=trade, a_trade=_a(trade), device=device, street=street,
                subject=subject, pronoun=pronoun, possessive=possessive, neighbour=rng.choice(NEIGHBOURS))


INVENTOR = ("{person} was born in {name} in {born}. "
            "{subject} worked as {a_trade} until {built}, when {pronoun} built the first {device}. "
            "{possessive} workshop stood on {street}, next to {neighbour}.", """
    In what year was {person} born? | {born}
    What was the trade of {person}? | {trade}
    What did {person} build in {built}? | {device}
    On which street was the workshop of {person}? | {street}
    When did {person} build the first {device}? | {built}""")


def _guild(rng, town):
    guild = f"{rng.choice(GUILD_WORDS)} Guild"
    year, = _years(rng, 1)
    count, trade, colour = rng.choice(COUNTS), rng.choice(TRADES), rng.choice(COLOURS)
    weekday, hall, animal, master = rng.choice(WEEKDAYS), rng.choice(HALLS), rng.choice(ANIMALS), _person(rng)
    return dict(guild=guild, year=year, count=count, trade=trade, colour=colour, weekday=weekday, hall=hall,
                animal=animal, an_animal=_a(animal), master=master)


GUILD = ("The {guild} of {name} was formed in {year} by {count} {trade}s. "
         "Its members wear {colour} sashes and meet every {weekday} in {hall}. "
         "The emblem of the guild is {an_animal}, and its present master is {master}.", """
    When was the {guild} formed? | {year}
    Which trade formed the {guild}? | {trade}s
    What colour sashes do members of the {guild} wear? | {colour}
    On which day does the {guild} meet? | {weekday}
    Where does the {guild} meet? | {hall}
    What is the emblem of the {guild}? | {animal}
    Who is the master of the {guild}? | {master}""")


def _instrument(rng, town):
    instrument = rng.choice(INSTRUMENT_STARTS) + rng.choice(INSTRUMENT_ENDS)
    kind = rng.choice(sorted(INSTRUMENT_KINDS))
    year, = _years(rng, 1)
    material, count, player = rng.choice(MATERIALS), rng.choice(COUNTS), _person(rng)
    return dict(instrument=instrument, kind=kind, a_kind=_a(kind), parts=INSTRUMENT_KINDS[kind], year=year,
                material=material, count=count, player=player)


INSTRUMENT = ("The {instrument} is {a_kind} first played in {name} around {year}. "
              "It is made of {material} and has {count} {parts}. "
              "Its best known player was {player}, who taught in {name} for many years.", """
    What kind of instrument is the {instrument}? | {kind}
    Around what year was the {instrument} first played? | {year}
    What is the {instrument} made of? | {material}
    How many {parts} does the {instrument} have? | {count}
    Who was the best known player of the {instrument}? | {player}""")


def _river(rng, town):
    hills, sea, cargo = rng.choice(HILLS), rng.choice(SEAS), rng.choice(CARGOES)
    length = f"{rng.randint(40, 390)} kilometres"
    port, lock = _town(rng), _town(rng)
    year, = _years(rng, 1)
    return dict(hills=hills, sea=sea, cargo=cargo, length=length, port=port, lock=lock, year=year)


RIVER = ("The {river} River rises in the {hills} Hills and flows {length} to the {sea} Sea. "
         "Barges on the {river} carry {cargo} from {name} down to the port of {port}. "
         "The oldest lock on the river, at {lock}, was built in {year}.", """
    Where does the {river} River rise? | {hills} Hills
    How long is the {river} River? | {length}
    Into which sea does the {river} flow? | {sea} Sea
    What do barges on the {river} carry? | {cargo}
    Which port do barges from {name} reach? | {port}
    Where is the oldest lock on the {river}? | {lock}
    When was the oldest lock on the {river} built? | {year}""")

TEMPLATES = {_founding: FOUNDING, _inventor: INVENTOR, _guild: GUILD, _instrument: INSTRUMENT, _river: RIVER}


def _fill(build, rng, town):
    """(context, [(question, answer), ...]) of one paragraph of kind `build`, drawn afresh."""
    facts = {**town, **build(rng, town)}
    context, questions = TEMPLATES[build]
    pairs = [line.strip().split(" | ") for line in questions.strip().splitlines()]
    return context.format(**facts), [(question.format(**facts), answer.format(**facts)) for question, answer in pairs]


PARAGRAPH_KINDS = (_founding, _inventor, _guild, _instrument, _river)


def _paragraph(rng, build, town):
    # Redraw until every candidate answer occurs exactly once, so its span is unambiguous
    # (e.g. a length of "48 kilometres" next to the year 1748 would not be).
    while True:
        context, candidates = _fill(build, rng, town)
        if all(context.count(answer) == 1 for _, answer in candidates):
            return context, candidates


def generate_squad(seed: int = 0, n_paragraphs: int = 200) -> dict:
    """The sample as a SQuAD v1.1 dict: one article per town, 1-3 paragraphs each, 1-3 questions a paragraph.

    Up to MAX_PARAGRAPHS paragraphs (about 2.7 questions each). A larger n_paragraphs only appends: the first
    articles are the same as those of a smaller one (except the last, which may have fewer paragraphs there).
    """
    if not 1 <= n_paragraphs <= MAX_PARAGRAPHS:
        raise ValueError(f"n_paragraphs must be between 1 and {MAX_PARAGRAPHS}, got {n_paragraphs}")
    rng = random.Random(seed)
    base = [start + end for start in TOWN_STARTS for end in TOWN_ENDS]
    prefixes, town_names = list(TOWN_PREFIXES), []
    articles, made = [], 0
    while made < n_paragraphs:
        if not town_names:  # the next round of names, shuffled only when reached (earlier articles stay the same)
            prefix = prefixes.pop(0)
            town_names = [prefix + name for name in base]
            rng.shuffle(town_names)  # article titles are drawn without replacement, so every title is distinct
        town = {"name": town_names.pop(),
                "river": rng.choice(RIVER_STARTS) + rng.choice(RIVER_ENDS),
                "province": rng.choice(PROVINCES)}
        kinds = rng.sample(PARAGRAPH_KINDS, min(rng.randint(1, 3), n_paragraphs - made))
        paragraphs = []
        for build in kinds:
            context, candidates = _paragraph(rng, build, town)
            n_questions = rng.choices((1, 2, 3), weights=(1, 2, 9))[0]
            qas = [{"id": f"ws{seed}-{made:04d}-{i}", "question": question,
                    "answers": [{"text": answer, "answer_start": context.index(answer)}]}
                   for i, (question, answer) in enumerate(rng.sample(candidates, n_questions))]
            paragraphs.append({"context": context, "qas": qas})
            made += 1
        articles.append({"title": town["name"], "paragraphs": paragraphs})
    return {"version": "workshop-sample-1", "data": articles}


def paragraphs_for(n_questions: int) -> int:
    """Enough paragraphs for n_questions questions (never fewer than the default 200), at most MAX_PARAGRAPHS."""
    return min(MAX_PARAGRAPHS, max(200, -(-n_questions // 2)))


def write_squad(path, seed: int = 0, n_paragraphs: int = 200) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(generate_squad(seed, n_paragraphs), f, indent=1)
        f.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the workshop's invented SQuAD-format sample as JSON.")
    parser.add_argument("path", help="output JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paragraphs", type=int, default=200)
    args = parser.parse_args(argv)
    write_squad(args.path, args.seed, args.paragraphs)


if __name__ == "__main__":
    main()
