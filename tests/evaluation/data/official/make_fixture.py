"""Builds the CHAIR/POPE comparison fixture (synthetic COCO-style data over real category names)."""

import json
import random
import sys
from pathlib import Path

CATS = [
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
]
NAME = dict(CATS)

# Hand-written captions, each aimed at one rule or quirk of the official scorer.
QUIRKS = [
    ("A train is parked next to the train tracks.", ["train"]),
    ("Several train tracks run past a station.", ["person"]),
    ("A man-made lake with a boat. A cat/dog sits nearby.", ["boat"]),
    ("A red bus drives down the street.", ["bus"]),
    ("Two buses are parked near a bus stop.", ["bus", "car"]),
    ("A glass of wine sits next to a wine glass on the table.", ["wine glass", "dining table"]),
    ("Two wine glasses and some glasses on a desk.", ["wine glass"]),
    ("A woman holds a tennis racket on a tennis court.", ["person", "tennis racket"]),
    ("Two men wearing ties and a bow tie.", ["person"]),
    ("A man with a tie stands by a bench.", ["person", "tie"]),
    ("A toilet seat is up in the bathroom. The seat of the toilet is white.", ["toilet"]),
    ("A seat next to a sink.", ["sink"]),
    ("A baby elephant walks with an adult elephant.", ["elephant"]),
    ("A baby sits in a high chair while a baby bird flies.", ["person", "chair"]),
    ("A passenger train and a passenger jet.", ["train"]),
    ("Passengers wait for the train.", ["train"]),
    ("Two hot dogs and a hot dog bun on a plate.", ["hot dog"]),
    ("A teddy bear and two teddy bears on a bed.", ["teddy bear", "bed"]),
    ("A man rides a motor bike next to a motor cycle.", ["person", "motorcycle"]),
    ("A cheesecake and a cake on the counter.", ["cake"]),
    ("A man holds an iPhone and a cell phone.", ["person"]),
    ("A stove top oven in the kitchen next to a stove.", ["oven"]),
    ("People and children walk past mice and knives.", ["person", "knife"]),
    ("Oxen and sheep graze in a field.", ["cow"]),
    ("A skier holds skis and a ski pole under blue skies.", ["person", "skis"]),
    ("The batter stands at home plate with a baseball bat and a baseball glove.", ["person", "baseball bat"]),
    ("Mobile phones and a cell-phone lie near a laptop computer.", ["laptop"]),
    ("Traffic lights and a stop sign near a fire hydrant.", ["traffic light", "stop sign"]),
    ("A sports ball and a ball on the grass.", ["sports ball"]),
    ("A dining table with potted plants and a hair drier.", ["dining table", "potted plant"]),
    ("Doggies and collies play with canoes.", ["dog"]),
    ("Magpies sit on a fence near a dog.", ["dog"]),
    ("The dog's bowl is next to the cats' toys.", ["dog", "bowl"]),
    ('A "surfboard" (and a kite) lie on the beach.', ["surfboard"]),
    ("On main st. a truck passes a car. Mr. Smith watches.", ["truck"]),
    ("Fruit, e.g. an apple, a banana, etc. are on the table.", ["apple", "dining table"]),
    ("There are 2. dogs... and a cat? Yes! A horse too.", ["dog", "horse"]),
    ("A dog.A cat on a couch.", ["couch"]),
    ("A giraffe and a zebra.\nA bird flies over them.", ["giraffe", "zebra"]),
    ("A GIRAFFE Stands Next To A ZEBRA.", ["giraffe"]),
    ("A hot-dog stand beside a teddy-bear shop.", ["person"]),
    ("The televison shows a tv show; a remote and a keyboard sit below.", ["tv", "remote"]),
    (
        "A refrigerator, a fridge and a freezer in the kitchen with a microwave.",
        ["refrigerator", "microwave"],
    ),
    ("A pickup truck next to a firetruck.", ["truck"]),
    ("", ["person"]),
    ("There is nothing here.", ["cat"]),
    ("A cup of coffee.", ["cup"]),
    ("A bus.", ["bus"]),
    ("The umbrellas, backpacks and suitcases are by the bench, near a parking meter.", ["umbrella", "bench"]),
    (
        "Sandwiches, pizzas, donuts, doughnuts and bagels on a tray with broccoli and carrots.",
        ["pizza", "broccoli"],
    ),
    ("Airplanes and an air plane at the airport; a jetliner and an airbus too.", ["airplane"]),
    (
        "A frisbee, a snowboard and a skateboard with scissors, a vase, a clock and a book.",
        ["frisbee", "book"],
    ),
    ("A toothbrush, a spoon, a fork and a bottle near a toaster and an orange.", ["toothbrush", "bottle"]),
    ("A cow and a bear near a sheep and a horse (a pony).", ["cow", "horse"]),
    ("Women's handbags and a purse on the chair.", ["handbag"]),
    ("Three kittens and a puppy's bowl; the pups sleep.", ["cat"]),
]

SINGULAR = {  # class -> surface forms used in generated captions (singular, plural)
    "person": [
        ("man", "men"),
        ("woman", "women"),
        ("child", "children"),
        ("person", "people"),
        ("boy", "boys"),
        ("girl", "girls"),
        ("player", "players"),
        ("skier", "skiers"),
    ],
    "bicycle": [("bicycle", "bicycles"), ("bike", "bikes")],
    "car": [("car", "cars"), ("taxi", "taxis"), ("van", "vans")],
    "motorcycle": [("motorcycle", "motorcycles"), ("scooter", "scooters")],
    "airplane": [("airplane", "airplanes"), ("plane", "planes"), ("jet", "jets")],
    "bus": [("bus", "buses"), ("trolley", "trolleys")],
    "train": [("train", "trains")],
    "truck": [("truck", "trucks")],
    "boat": [("boat", "boats"), ("ship", "ships"), ("canoe", "canoes"), ("yacht", "yachts")],
    "traffic light": [("traffic light", "traffic lights")],
    "fire hydrant": [("fire hydrant", "fire hydrants"), ("hydrant", "hydrants")],
    "stop sign": [("stop sign", "stop signs")],
    "bench": [("bench", "benches")],
    "bird": [("bird", "birds"), ("duck", "ducks"), ("goose", "geese"), ("pigeon", "pigeons")],
    "cat": [("cat", "cats"), ("kitten", "kittens")],
    "dog": [("dog", "dogs"), ("puppy", "puppies")],
    "horse": [("horse", "horses"), ("pony", "ponies")],
    "sheep": [("sheep", "sheep"), ("lamb", "lambs")],
    "cow": [("cow", "cows"), ("calf", "calves")],
    "elephant": [("elephant", "elephants")],
    "bear": [("bear", "bears")],
    "zebra": [("zebra", "zebras")],
    "giraffe": [("giraffe", "giraffes")],
    "umbrella": [("umbrella", "umbrellas")],
    "tie": [("tie", "ties")],
    "suitcase": [("suitcase", "suitcases"), ("luggage", "luggage")],
    "kite": [("kite", "kites")],
    "skateboard": [("skateboard", "skateboards")],
    "surfboard": [("surfboard", "surfboards")],
    "bottle": [("bottle", "bottles")],
    "wine glass": [("wine glass", "wine glasses")],
    "cup": [("cup", "cups")],
    "knife": [("knife", "knives")],
    "bowl": [("bowl", "bowls")],
    "banana": [("banana", "bananas")],
    "apple": [("apple", "apples")],
    "sandwich": [("sandwich", "sandwiches")],
    "orange": [("orange", "oranges")],
    "pizza": [("pizza", "pizzas")],
    "donut": [("donut", "donuts")],
    "cake": [("cake", "cakes"), ("cupcake", "cupcakes")],
    "chair": [("chair", "chairs"), ("stool", "stools")],
    "couch": [("couch", "couches"), ("sofa", "sofas")],
    "potted plant": [("potted plant", "potted plants")],
    "bed": [("bed", "beds")],
    "dining table": [("table", "tables"), ("desk", "desks")],
    "toilet": [("toilet", "toilets")],
    "tv": [("tv", "tvs"), ("television", "televisions")],
    "laptop": [("laptop", "laptops"), ("computer", "computers")],
    "mouse": [("mouse", "mice")],
    "cell phone": [("cell phone", "cell phones"), ("phone", "phones")],
    "sink": [("sink", "sinks")],
    "clock": [("clock", "clocks")],
    "vase": [("vase", "vases")],
    "book": [("book", "books")],
    "teddy bear": [("teddy bear", "teddy bears")],
    "oven": [("oven", "ovens"), ("stove", "stoves")],
    "refrigerator": [("refrigerator", "refrigerators"), ("fridge", "fridges")],
}
PLACES = [
    "in a park",
    "on the street",
    "in a kitchen",
    "at the beach",
    "in a living room",
    "near a river",
    "on a field",
    "in the snow",
]
OPEN = [
    "There {be} {np} {place}.",
    "{NP} {be} {place}.",
    "In this image, {np} {be} visible {place}.",
    "The picture shows {np} {place}.",
]


def np_for(rng, cls):
    sing, plur = rng.choice(SINGULAR[cls])
    n = rng.choice([1, 1, 2, 3])
    if n == 1:
        art = "an" if sing[0] in "aeiou" else "a"
        return f"{art} {sing}", False
    return f"{['two', 'three'][n - 2]} {plur}", True


def generated(rng):
    present = rng.sample(sorted(SINGULAR), 3)
    absent = rng.choice([c for c in sorted(SINGULAR) if c not in present])
    mentioned = present[:2] + ([absent] if rng.random() < 0.5 else [])
    sentences = []
    for cls in mentioned:
        np, plural = np_for(rng, cls)
        t = rng.choice(OPEN)
        s = t.format(be="are" if plural else "is", np=np, NP=np[0].upper() + np[1:], place=rng.choice(PLACES))
        sentences.append(s)
    text = " ".join(sentences)
    if rng.random() < 0.3:
        text = text.replace(". ", ", and ", 1)
    if rng.random() < 0.2:
        text = text.rstrip(".")
    return text, present


def build(seed, out, n_generated=40, n_pope=72):
    rng = random.Random(seed)
    out = Path(out)
    (out / "coco").mkdir(parents=True, exist_ok=True)
    items = list(QUIRKS) + [generated(rng) for _ in range(n_generated)]
    images, instances, refs, answers = [], [], [], []
    ann = 1
    for i, (caption, present) in enumerate(items):
        image_id = 1000 + seed * 10000 + i
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        for name in present:
            cid = next(c for c, n in CATS if n == name)
            instances.append({"id": ann, "image_id": image_id, "category_id": cid})
            ann += 1
        # Reference captions name the first present object (plural or with a quirk) and a scene word.
        first = present[0]
        forms = SINGULAR.get(first, [(first, first + "s")])
        refs.append(
            {
                "id": ann,
                "image_id": image_id,
                "caption": f"A photo of {rng.choice(forms)[1]} {rng.choice(PLACES)}.",
            }
        )
        ann += 1
        refs.append(
            {
                "id": ann,
                "image_id": image_id,
                "caption": rng.choice(
                    [
                        "A table with food on it.",
                        "A man standing outside.",
                        "Some train tracks by a road.",
                        "A bus on a street.",
                        "A room with a couch and a tv.",
                        "Nothing much in view.",
                    ]
                ),
            }
        )
        ann += 1
        answers.append({"image_id": image_id, "answer": caption})
    cats = [{"id": c, "name": n, "supercategory": "x"} for c, n in CATS]
    json.dump(
        {"info": {}, "licenses": [], "images": images, "annotations": instances, "categories": cats},
        open(out / "coco/instances_val2014.json", "w"),
    )
    json.dump(
        {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": cats},
        open(out / "coco/instances_train2014.json", "w"),
    )
    json.dump(
        {"info": {}, "licenses": [], "images": images, "annotations": refs},
        open(out / "coco/captions_val2014.json", "w"),
    )
    json.dump(
        {"info": {}, "licenses": [], "images": [], "annotations": []},
        open(out / "coco/captions_train2014.json", "w"),
    )
    with open(out / "chair_answers.jsonl", "w") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    # POPE
    replies = [
        "Yes",
        "No",
        "yes",
        "no",
        "Yes.",
        "No.",
        "NO",
        "No!",
        "(no)",
        "Not really.",
        "NOT at all",
        "Yes! There is no zebra.",
        "Yes, there is a {o} in the image.",
        "No, there is no {o} in the image.",
        "There is no {o}.",
        "I do not see a {o}",
        "Yes, but it is not clear.",
        "No there isn't",
        "no,",
        "There isn't a {o} in the image.",
        "I don't think so.",
        "",
        "The image shows a {o}. It is not large.",
        "Yes.No.",
        "yes\nno",
        "No\nthere is not",
        "It's not there",
        "not",
        "Nope.",
        "Absolutely. No doubt.",
        " no",
        "no.",
        "Yes, no doubt.",
        "There is a {o}, not a dog.",
        "Is there? no",
        "Yes it is (not sure)",
        "No,there is none.",
    ]
    names = [n for _, n in CATS]
    for split in ("random", "popular", "adversarial"):
        q_rows, a_rows = [], []
        for j in range(n_pope // 3):
            obj = rng.choice(names)
            qid = (
                f"{split[0]}{j}"
                if j % 2
                else len(q_rows) + {"random": 0, "popular": 1000, "adversarial": 2000}[split]
            )
            label = rng.choice(["yes", "no"])
            q_rows.append(
                {
                    "question_id": qid,
                    "image": f"COCO_val2014_{j:012d}.jpg",
                    "text": f"Is there a {obj} in the image?",
                    "label": label,
                }
            )
            reply = replies[(j * 7 + len(split)) % len(replies)] if j < len(replies) else rng.choice(replies)
            a_rows.append({"question_id": qid, "answer": reply.format(o=obj)})
        with open(out / f"pope_{split}.jsonl", "w") as f:
            for r in q_rows:
                f.write(json.dumps(r) + "\n")
        with open(out / f"pope_{split}_answers.jsonl", "w") as f:
            for r in a_rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    build(int(sys.argv[1]), sys.argv[2])
