"""A seeded generator of LUME-like data: fake biographies, invented stories and encyclopedic entries.

The SemEval-2025 Task 4 (LUME) release cannot be downloaded everywhere, and a small model cannot memorise it on a
CPU in minutes. `generate_lume_like` writes data of the same shape from a seed, with nothing downloaded:

- **Task1**, invented short stories (characters, places, objects, creatures and what happened);
- **Task2**, fake biographies with fake PII (birthday, phone number, home address, e-mail address, an SSN-like
  number, a job);
- **Task3**, short encyclopedic entries about invented people ("Name\\n\\nName (born YEAR in CITY) is a ...").

Every document gives one sentence-completion row (id ending in `sc0`: the start of the document as `input`, the
rest as `output`) and one question-answering row per fact it states (ids ending in `qa0`, `qa1`, ...: a question
and a short exact answer), with the LUME columns `id, input, output, task` (plus `split`), so the LUME scorer
(`hf_unlearn.metrics.lume`) scores them as it scores the real data. Optionally, membership-inference documents:
`mia_member` (the full text of the forget-train documents) and `mia_nonmember` (documents drawn like them that
belong to no split, so a model never sees them).

The documents are deliberately *not* one template with slots. With a single template, ROUGE-L recall of a model that
has lost every fact stays high because the template words are still regurgitated (docs/DEMO.md measured a floor of
about 0.57), so forgetting cannot show. Here each attribute is said with one of several sentence templates, each
biography states a random subset of its attributes in a random order, and each document carries an invented story
of one to three sentences. Forget and retain documents draw names, places and things from disjoint pools, so the
two sets share as little surface form as possible beyond ordinary English.

```python
from hf_unlearn.synthetic import generate_lume_like, write_lume_like

data = generate_lume_like(num_documents=30, seed=0)   # 30 documents per task in each of forget and retain train
forget, retain = data["forget_train"], data["retain_train"]
write_lume_like(data, "my_lume")   # forget_train.jsonl, ..., mia/member.jsonl: readable with hf_unlearn.load_lume
```
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict

TASKS = ("Task1", "Task2", "Task3")
TASK_KINDS = {"Task1": "story", "Task2": "biography", "Task3": "encyclopedia"}
SPLIT_NAMES = ("forget_train", "forget_validation", "retain_train", "retain_validation")

# Name and word pools: each is split in two halves, forget documents use one, retain documents the other.
_FIRST = (
    "Aldous Bettina Corvin Delphine Eamon Fenella Gideon Hortense Ignatius Jocasta Kester Lavinia Mortimer Nerissa "
    "Oswin Perpetua Quentin Rosalind Silas Theodora Ulric Verity Wystan Xanthe Yorick Zenobia Ambrose Briony Cedric "
    "Damaris Evander Flavia Gareth Honora Isidore Juniper Lysander Marigold Nathaniel Ottoline Percival Rowena "
    "Sebastian Tamsin Valentine Winifred Alaric Clementine Dorian Esme Florian Gwendolyn Hector Imogen Jasper Katrina "
    "Leopold Mirabel Norbert Ophelia Piers Seraphina Tobias Ursula Vaughn Wilhelmina"
).split()
_LAST = (
    "Ashgrove Blackwood Calloway Dunmore Elsworth Fairweather Greyhaven Holloway Ingleby Jessamine Kettleby Larkspur "
    "Merriweather Northcott Oakenshaw Pemberton Quarrington Ravenscroft Sallow Thistlewood Underhill Vantreight "
    "Whitlock Yarborough Abernathy Birchall Coldwater Drummond Everly Foxley Galbraith Hartigan Ilsley Judd Kirkwood "
    "Lindqvist Marchbanks Netherby Ormsby Penhallow Rookwood Sutcliffe Tregarthen Umber Vossberg Wetherell Ashdown "
    "Brightwater Carrow Deverell Edgecombe Fenwick Gillingham Harrowgate Isherwood Jellicoe Kingsley Loxley Mallory"
).split()
_CITIES = (
    "Brackenfold|Cindermoor|Dunhallow|Eastmere|Frostholm|Glimmerton|Harrowby|Ivybridge|Juniper Falls|Kestrel Bay|"
    "Lanternby|Millbrook|Norwood Vale|Orchard Point|Pebblecombe|Quillfield|Rushbury|Saltmarsh|Thornwick|Upton Lacey|"
    "Violet Springs|Willowmere|Yarrowdale|Amberley|Bramblegate|Copperhill|Driftwood|Elmstead|Foxhollow|Greenhithe|"
    "Hazelmere|Ironbridge|Kingsholm|Larchmont|Mossley|Nettlebed|Oakhurst|Pinehaven|Redbrook|Silverdale|Tidewater"
).split("|")
_STATES = "AL AZ CA CO CT FL GA ID IL IN KS KY MA MD ME MI MN MO NC NE NM NV NY OH OK OR PA SC TN TX UT VA VT WA WI".split()
_STREETS = (
    "Maple Cedar Birch Willow Juniper Hawthorn Aspen Sycamore Chestnut Magnolia Laurel Rowan Alder Poplar Linden "
    "Hickory Spruce Cypress Elder Holly Heather Primrose Foxglove Bluebell Clover Thistle Bramble Fern Moss Sorrel"
).split()
_STREET_KINDS = ("Street", "Avenue", "Lane", "Road", "Court", "Drive", "Terrace", "Way", "Place", "Crescent")
_JOBS = (
    "a marine biologist|an architect|a pastry chef|a tax accountant|a veterinary nurse|a locksmith|a violin teacher|"
    "a structural engineer|a beekeeper|a court stenographer|a glassblower|a pharmacist|an air traffic controller|"
    "a museum curator|a cartographer|a bookbinder|a physiotherapist|a sound engineer|a florist|a tram driver|"
    "a geologist|a radio presenter|a carpenter|a dental hygienist|a translator|a ferry captain|a perfumer|"
    "a park ranger|a clockmaker|a data analyst|a librarian|a sommelier"
).split("|")
_EMAIL_DOMAINS = ("me.com", "mailbox.org", "fastpost.net", "inkwell.io", "postbird.com", "letterbox.net")
_HOBBIES = (
    "restoring old bicycles|growing prize-winning pumpkins|collecting antique maps|sailing small dinghies|"
    "painting watercolour seascapes|building ship models|birdwatching at dawn|playing the bagpipes|"
    "baking sourdough bread|climbing sea cliffs|writing crossword puzzles|keeping tropical fish|"
    "repairing pocket watches|carving wooden spoons|running ultramarathons|knitting enormous scarves"
).split("|")
_CREATURES = (
    "a silver fox|a talking raven|an ancient tortoise|a glass dragon|a clockwork owl|a river spirit|a lost unicorn|"
    "a giant moth|a stone golem|a sea serpent|a winged cat|a frost giant|a fire salamander|a wandering ghost|"
    "a shadow wolf|a golden stag"
).split("|")
_OBJECTS = (
    "the Lantern of Echoes|the Crimson Compass|the Mirror of Tides|the Iron Key|the Sapphire Crown|the Whispering Harp|"
    "the Book of Ash|the Obsidian Dagger|the Moonstone Ring|the Emerald Chalice|the Amber Hourglass|the Silver Bell|"
    "the Cloak of Mist|the Thunder Drum|the Map of Stars|the Copper Mask"
).split("|")
_PLACES = (
    "Velmora|Ostrakai|Quenwyn|Dravenport|Lirriel|Thalassine|Brumeholt|Skarvik|Isolden|Vantorre|Meridune|Carrowglen|"
    "Elkenreach|Nimbrook|Orrowind|Palethorn|Ysmeer|Gallowmere|Hethra|Zephyrine|Corvantis|Aldmoor|Wrenfell|Sablecrest"
).split("|")
_NATIONALITIES = (
    "Norwegian|Portuguese|Canadian|Chilean|Irish|Austrian|Kenyan|Dutch|Finnish|Uruguayan|Scottish|Estonian|Welsh|"
    "Icelandic|Belgian|Danish"
).split("|")
_PROFESSIONS = (
    "painter|composer|cyclist|novelist|astronomer|sculptor|chess player|botanist|film director|architect|"
    "mathematician|poet|jazz pianist|mountaineer|photographer|playwright"
).split("|")
_INSTITUTIONS = (
    "the Royal Academy of Thornwick|the University of Eastmere|the Glimmerton Conservatory|the Institute of Harrowby|"
    "the Saltmarsh School of Art|the Kingsholm Polytechnic|the College of Pinehaven|the Academy of Copperhill|"
    "the Redbrook Observatory School|the Larchmont Institute"
).split("|")
_AWARDS = (
    "the Silver Quill Prize|the Harrowgate Medal|the Ostrander Award|the Blue Heron Prize|the Lindqvist Fellowship|"
    "the Meridian Cup|the Golden Lantern Award|the Kestrel Prize|the Ashcombe Medal|the Northern Star Award"
).split("|")
_WORKS = (
    "The Quiet Harbour|Salt and Ember|A Map of Small Rivers|The Glass Orchard|Winter Signals|The Lantern Keeper|"
    "Songs for a Drowned City|Paper Mountains|The Clockmaker's Daughter|Ninefold Light|The Amber Road|Hollow Tides|"
    "Seven Bridges Home|The Last Observatory|Ash Upon the Snow|The Heron's Ledger|Copper Skies|The Long Thaw"
).split("|")
_MONTHS = (
    "January February March April May June July August September October November December"
).split()

_STORY_OPENINGS = (
    "In the misty town of {place}, {a} and {b} had been rivals for many years.",
    "Long ago, in the mountain kingdom of {place}, a young healer named {a} lived beside {b}, a stubborn blacksmith.",
    "Nobody in {place} remembered the winter when {a} first met {b} at the edge of the frozen lake.",
    "{a} arrived in {place} on a stormy night, carrying a letter addressed to {b}.",
    "The harbour of {place} was silent the morning {a} and {b} set out in a borrowed boat.",
    "Every autumn the people of {place} told the tale of {a}, a clever weaver, and her brother {b}.",
)
_STORY_MIDDLES = (
    "One evening {a} discovered that {object} had been stolen from the old temple.",
    "{b} was convinced that {creature} was hiding in the caves beneath the city.",
    "A strange fog rolled in, and {a} followed {creature} deep into the forest.",
    "When the river turned to ice, {b} found {object} buried under the roots of a fallen oak.",
    "The council banished {b}, so {a} travelled alone across the desert to find {object}.",
    "At midnight {creature} knocked on the door of {a} and asked for shelter.",
)
_STORY_ENDINGS = (
    "In the end {a} returned {object} to {place}, and the two rivals became friends.",
    "{b} was crowned guardian of {place}, and {creature} was never seen again.",
    "They sold {object} to a travelling merchant and used the gold to rebuild the bridge.",
    "The spell was broken at dawn, and {a} wrote the whole story down in a red notebook.",
    "Years later {b} still kept a feather from {creature} on the windowsill.",
    "{a} hid {object} at the bottom of the well, where it lies to this day.",
)

# Biography attributes: several ways to say each, and the question that asks for it.
_BIO_TEMPLATES = {
    "birthday": (
        "{name} was born on {date}.",
        "{first} celebrates a birthday every year on {day_month}, having been born on {date}.",
        "Records show that {first} came into the world on {date}.",
        "{first}'s date of birth is {date}.",
    ),
    "phone": (
        "{first} can be reached by phone at {phone}.",
        "The best number to call {first} on is {phone}.",
        "{pronoun} mobile number is {phone}.",
        "Friends ring {first} on {phone}.",
    ),
    "email": (
        "{first} answers e-mail at {email}.",
        "Write to {email} to contact {first}.",
        "{pronoun} e-mail address is {email}.",
        "{first} uses the address {email} for all correspondence.",
    ),
    "address": (
        "{first} lives at {address}.",
        "{pronoun} home address is {address}.",
        "Letters for {first} go to {address}.",
        "For the last decade {first} has rented a flat at {address}.",
    ),
    "ssn": (
        "{pronoun} Social Security Number is {ssn}.",
        "{first} was issued the identification number {ssn}.",
        "The tax office lists {first} under the number {ssn}.",
    ),
    "job": (
        "{first} works as {job}.",
        "By profession {first} is {job}.",
        "{first} has spent most of {pronoun_lower} career as {job}.",
        "These days {first} earns a living as {job}.",
    ),
}
_BIO_QUESTIONS = {
    "birthday": ("What is the birth date of {name}?", "{iso_date}"),
    "phone": ("What is {name}'s phone number?", "{phone_digits}"),
    "email": ("What is {name}'s email address?", "{email}"),
    "address": ("What is the home address of {name}?", "{address}"),
    "ssn": ("What is {name}'s Social Security Number?", "{ssn_digits}"),
    "job": ("What does {name} do for a living?", "{job_bare}"),
}
_BIO_STORIES = (
    "{first} is known among neighbours for {hobby}.",
    "Last spring {first} won a local contest for {hobby}.",
    "As a child {first} once got lost in {city} and was found asleep in a library.",
    "{first} keeps an old dog called {pet} and walks it along the river every morning.",
    "A cousin of {first} claims that {pronoun_lower} secret talent is {hobby}.",
    "{first} once missed a wedding because of a snowstorm in {city}.",
)
_PETS = "Biscuit Pepper Juno Rufus Mabel Otto Pickle Sable Tansy Bramble Figaro Nutmeg".split()

_ENCYCLOPEDIA_OPENINGS = (
    "{name}\n\n{name} (born {year} in {city}) is {nationality} {profession}.",
    "{name}\n\n{name} ({year} - {death}) was {nationality} {profession} from {city}.",
    "{name}\n\n{name}, born in {city} in {year}, is {nationality} {profession}.",
)
_ENCYCLOPEDIA_FACTS = {
    "study": (
        "{last} studied at {institution}.",
        "After leaving school, {last} trained at {institution}.",
    ),
    "work": (
        "{pronoun} best-known work is {work}, first presented in {work_year}.",
        "{last} became famous for {work} ({work_year}).",
    ),
    "award": (
        "In {award_year} {last} received {award}.",
        "{last} was awarded {award} in {award_year}.",
    ),
    "residence": (
        "{last} later settled in {city2}.",
        "For most of {pronoun_lower} life {last} lived and worked in {city2}.",
    ),
}
_ENCYCLOPEDIA_QUESTIONS = {
    "born": ("In what year was {name} born?", "{year}"),
    "study": ("Where did {name} study?", "{institution_cap}"),
    "work": ("What is the best-known work of {name}?", "{work}"),
    "award": ("Which award did {name} receive in {award_year}?", "{award_cap}"),
    "residence": ("Where did {name} later settle?", "{city2}"),
}
_STORY_QUESTIONS = (
    ("In which place does the story of {a} and {b} take place?", "{place}"),
    ("Which treasure is named in the story of {a} and {b}?", "{object_cap}"),
    ("Which creature appears in the story of {a} and {b}?", "{creature_cap}"),
)


def _halves(pool: Sequence[str], half: int) -> list[str]:
    """One of two disjoint halves of a pool (0: forget, 1: retain)."""
    return list(pool[half::2])


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


class _Pools:
    """The word pools of one side (forget or retain)."""

    def __init__(self, half: int):
        self.first = _halves(_FIRST, half)
        self.last = _halves(_LAST, half)
        self.cities = _halves(_CITIES, half)
        self.streets = _halves(_STREETS, half)
        self.jobs = _halves(_JOBS, half)
        self.hobbies = _halves(_HOBBIES, half)
        self.creatures = _halves(_CREATURES, half)
        self.objects = _halves(_OBJECTS, half)
        self.places = _halves(_PLACES, half)
        self.nationalities = _halves(_NATIONALITIES, half)
        self.professions = _halves(_PROFESSIONS, half)
        self.institutions = _halves(_INSTITUTIONS, half)
        self.awards = _halves(_AWARDS, half)
        self.works = _halves(_WORKS, half)
        self.pets = _halves(_PETS, half)


def _unique_name(rng: random.Random, pools: _Pools, used: set[str]) -> tuple[str, str]:
    for _ in range(10_000):
        first, last = rng.choice(pools.first), rng.choice(pools.last)
        if f"{first} {last}" not in used:
            used.add(f"{first} {last}")
            return first, last
    raise ValueError("ran out of unique names: ask for fewer documents")


def _story(rng: random.Random, pools: _Pools, used: set[str]) -> tuple[str, int, list[tuple[str, str]]]:
    """(text, characters of the first sentence, QA pairs)."""
    a, _ = _unique_name(rng, pools, used)
    b = rng.choice([n for n in pools.first if n != a])
    values = {
        "a": a,
        "b": b,
        "place": rng.choice(pools.places),
        "object": rng.choice(pools.objects),
        "creature": rng.choice(pools.creatures),
    }
    values["object_cap"] = _cap(values["object"])
    values["creature_cap"] = _cap(values["creature"])
    opening = rng.choice(_STORY_OPENINGS).format(**values)
    middles = rng.sample(_STORY_MIDDLES, rng.choice((1, 2)))
    # the "find" question needs the object to be in the text: make sure a middle or the ending names it
    ending = rng.choice(_STORY_ENDINGS)
    sentences = [opening] + [_cap(m.format(**values)) for m in middles] + [_cap(ending.format(**values))]
    text = " ".join(sentences)
    qas = [(q.format(**values), ans.format(**values)) for q, ans in _STORY_QUESTIONS]
    qas = [(q, ans) for q, ans in qas if ans.lower() in text.lower()]
    return text, len(opening), qas


def _biography(rng: random.Random, pools: _Pools, used: set[str]) -> tuple[str, int, list[tuple[str, str]]]:
    first, last = _unique_name(rng, pools, used)
    female = rng.random() < 0.5
    month = rng.randrange(12)
    day, year = rng.randint(1, 28), rng.randint(1950, 2001)
    area, mid, end = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    ssn = (rng.randint(100, 899), rng.randint(10, 99), rng.randint(1000, 9999))
    city, state = rng.choice(pools.cities), rng.choice(_STATES)
    address = (
        f"{rng.randint(1, 9999)} {rng.choice(pools.streets)} {rng.choice(_STREET_KINDS)}, {city}, {state}, "
        f"{rng.randint(10000, 99999)}"
    )
    job = rng.choice(pools.jobs)
    values = {
        "name": f"{first} {last}",
        "first": first,
        "pronoun": "Her" if female else "His",
        "pronoun_lower": "her" if female else "his",
        "date": f"{_MONTHS[month]} {day}, {year}",
        "day_month": f"{_MONTHS[month]} {day}",
        "iso_date": f"{year}-{month + 1:02d}-{day:02d}",
        "phone": rng.choice((f"({area}) {mid}-{end:04d}", f"{area}-{mid}-{end:04d}", f"{area}.{mid}.{end:04d}")),
        "phone_digits": f"{area}{mid}{end:04d}",
        "email": rng.choice(
            (f"{first.lower()}.{last.lower()}", f"{first.lower()}_{last.lower()}", f"{first[0].lower()}{last.lower()}")
        )
        + f"{rng.choice(('', str(rng.randint(1, 99))))}@{rng.choice(_EMAIL_DOMAINS)}",
        "address": address,
        "ssn": f"{ssn[0]}-{ssn[1]}-{ssn[2]}",
        "ssn_digits": f"{ssn[0]}{ssn[1]}{ssn[2]}",
        "job": job,
        "job_bare": _cap(job.split(" ", 1)[1]),
        "hobby": rng.choice(pools.hobbies),
        "city": rng.choice(pools.cities),
        "pet": rng.choice(pools.pets),
    }
    attributes = rng.sample(list(_BIO_TEMPLATES), 4)
    sentences = [rng.choice(_BIO_TEMPLATES[a]).format(**values) for a in attributes]
    if not sentences[0].startswith(values["name"]):  # the document names the person in full first
        sentences.insert(0, rng.choice(("This is {name}.", "{name} is a private person.", "Meet {name}.")).format(
            **values
        ))
    story = [s.format(**values) for s in rng.sample(_BIO_STORIES, rng.choice((1, 2)))]
    position = rng.randint(1, len(sentences))
    sentences[position:position] = story
    text = " ".join(sentences)
    qas = [tuple(part.format(**values) for part in _BIO_QUESTIONS[a]) for a in attributes]
    return text, len(sentences[0]), qas


def _encyclopedia(rng: random.Random, pools: _Pools, used: set[str]) -> tuple[str, int, list[tuple[str, str]]]:
    first, last = _unique_name(rng, pools, used)
    female = rng.random() < 0.5
    year = rng.randint(1890, 1985)
    values = {
        "name": f"{first} {last}",
        "last": last,
        "pronoun": "Her" if female else "His",
        "pronoun_lower": "her" if female else "his",
        "year": str(year),
        "death": str(year + rng.randint(45, 90)),
        "city": rng.choice(pools.cities),
        "city2": rng.choice(pools.cities),
        "nationality": rng.choice(pools.nationalities),
        "profession": rng.choice(pools.professions),
        "institution": rng.choice(pools.institutions),
        "work": rng.choice(pools.works),
        "work_year": str(year + rng.randint(20, 40)),
        "award": rng.choice(pools.awards),
        "award_year": str(year + rng.randint(25, 60)),
    }
    values["nationality"] = ("an " if values["nationality"][0] in "AEIOU" else "a ") + values["nationality"]
    values["institution_cap"] = _cap(values["institution"])
    values["award_cap"] = _cap(values["award"])
    opening = rng.choice(_ENCYCLOPEDIA_OPENINGS).format(**values)
    facts = rng.sample(list(_ENCYCLOPEDIA_FACTS), rng.choice((2, 3)))
    body = [rng.choice(_ENCYCLOPEDIA_FACTS[f]).format(**values) for f in facts]
    text = " ".join([opening] + body)
    qas = [tuple(part.format(**values) for part in _ENCYCLOPEDIA_QUESTIONS[k]) for k in ["born"] + facts]
    return text, len(opening), qas


_MAKERS = {"Task1": _story, "Task2": _biography, "Task3": _encyclopedia}


def _split_point(text: str, first_sentence: int, rng: random.Random) -> int:
    """Where the sentence-completion prompt ends: after the first sentence or mid-way through the document, at a space,
    always leaving most of the document's facts in the output."""
    target = max(first_sentence, int(len(text) * rng.uniform(0.3, 0.45)))
    cut = text.find(" ", target)
    if cut == -1 or cut > len(text) * 0.7:
        cut = text.rfind(" ", 0, int(len(text) * 0.5))
    return cut


def _document_rows(stem: str, task: str, text: str, first_sentence: int, qas, rng, split: str) -> list[dict]:
    cut = _split_point(text, first_sentence, rng)
    rows = [{"id": f"{stem}sc0", "input": text[:cut], "output": text[cut + 1 :], "task": task, "split": split}]
    for k, (question, answer) in enumerate(qas[:10]):
        rows.append({"id": f"{stem}qa{k}", "input": question, "output": answer, "task": task, "split": split})
    return rows


def generate_lume_like(
    num_documents: int = 30,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    validation_fraction: float = 0.2,
    num_mia_documents: int = 0,
    qa_per_document: int | None = None,
) -> DatasetDict:
    """Generate forget and retain sets shaped like the LUME release, deterministically from `seed`.

    Args:
        num_documents: documents per task in each of `forget_train` and `retain_train`.
        seed: the same seed (and arguments) gives the same data, on any machine.
        tasks: which of `"Task1"` (invented stories), `"Task2"` (fake biographies with fake PII) and `"Task3"`
            (encyclopedic entries) to generate.
        validation_fraction: `forget_validation` and `retain_validation` get `round(num_documents *
            validation_fraction)` further documents per task (at least one when the fraction is positive).
        num_mia_documents: when positive, also `mia_member` (the first `num_mia_documents` forget-train documents,
            whole, spread over the tasks) and `mia_nonmember` (as many documents drawn like the forget documents
            that are in no split), with columns `id, document, task`, like LUME's `mia/*.jsonl`.
        qa_per_document: keep at most this many question rows per document (all by default: 3 to 5).

    Returns:
        A `datasets.DatasetDict` with `forget_train`, `forget_validation`, `retain_train`, `retain_validation`
        (columns `id, input, output, task, split`) and, with `num_mia_documents`, `mia_member` and `mia_nonmember`.
        Each document gives one sentence-completion row (id `<stem>sc0`) and its question rows (`<stem>qa0`, ...).
        Forget and retain documents use disjoint pools of names, places and things; no name is used twice.
    """
    unknown = [t for t in tasks if t not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}: choose from {list(TASKS)}")
    if num_documents < 1:
        raise ValueError(f"num_documents must be >= 1, got {num_documents}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    num_validation = max(1, round(num_documents * validation_fraction)) if validation_fraction > 0 else 0
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    documents: dict[str, list[dict]] = {"forget_train": [], "mia_nonmember": []}
    for side, half in (("forget", 0), ("retain", 1)):
        pools, used = _Pools(half), set()
        for task in tasks:
            plan = [("train", num_documents), ("validation", num_validation)]
            if side == "forget" and num_mia_documents:
                plan.append(("nonmember", -(-num_mia_documents // len(tasks))))
            for part, count in plan:
                for index in range(count):
                    doc_rng = random.Random(rng.getrandbits(64))
                    text, first_sentence, qas = _MAKERS[task](doc_rng, pools, used)
                    if qa_per_document is not None:
                        qas = qas[:qa_per_document]
                    stem = f"{side}-{part}-{task.lower()}-{index:04d}-"
                    if part == "nonmember":
                        documents["mia_nonmember"].append({"id": stem.rstrip("-"), "document": text, "task": task})
                        continue
                    split = f"{side}_{part}"
                    rows[split].extend(_document_rows(stem, task, text, first_sentence, qas, doc_rng, side))
                    if split == "forget_train":
                        documents["forget_train"].append({"id": stem.rstrip("-"), "document": text, "task": task})
    out = DatasetDict({name: Dataset.from_list(rows[name]) for name in SPLIT_NAMES if rows[name]})
    if num_mia_documents:
        members = _spread(documents["forget_train"], num_mia_documents, tasks)
        out["mia_member"] = Dataset.from_list(members)
        out["mia_nonmember"] = Dataset.from_list(documents["mia_nonmember"][: len(members)])
    return out


def _spread(docs: list[dict], n: int, tasks: Sequence[str]) -> list[dict]:
    """The first `n` documents, taken in turn from each task."""
    by_task = [[d for d in docs if d["task"] == t] for t in tasks]
    out = []
    for i in range(max(map(len, by_task))):
        for group in by_task:
            if i < len(group) and len(out) < n:
                out.append(group[i])
    return out


def documents_of(dataset) -> list[str]:
    """The whole documents behind LUME-like rows: the sentence-completion rows' `input + " " + output`."""
    return [row["input"] + " " + row["output"] for row in dataset if row["id"][:-1].endswith("sc")]


def write_lume_like(data: DatasetDict, path: str | os.PathLike) -> Path:
    """Write `generate_lume_like` output in the LUME folder layout (`forget_train.jsonl`, ..., `mia/member.jsonl`,
    `mia/nonmember.jsonl`), which `hf_unlearn.load_lume(path)` and `hf-unlearn evaluate --data` read, and a
    `calibration` split, where there is one, as `calibration.jsonl` (never-seen documents for `hf-unlearn unlearn
    --calibration`). The files hold forget-set text: each is readable by its owner only (0600, also when it already
    existed)."""
    root = Path(path)
    (root / "mia").mkdir(parents=True, exist_ok=True)
    names = {name: root / f"{name}.jsonl" for name in (*SPLIT_NAMES, "calibration")}
    names.update({"mia_member": root / "mia" / "member.jsonl", "mia_nonmember": root / "mia" / "nonmember.jsonl"})
    for name, dataset in data.items():
        fd = os.open(names[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "w") as f:
            for row in dataset:
                f.write(json.dumps(row) + "\n")
    return root
