"""The synthetic shapes world: scenes, captions and yes/no questions, deterministic by seed.

    from chip.demo.world import WorldConfig, make_scene
    scene = make_scene(7)          # Scene(image=<48x48 PIL>, objects=(...), caption="...", ...)

A scene is a 48x48 RGB image on a 3x3 grid of 16-px cells. One to three *anchor* objects (ten
shape classes, five colours) stand in distinct cells, drawn large and clear. Eight classes come
in *partner* pairs (star-moon, heart-ring, cross-diamond, arrow-triangle): an anchor brings its
partner into its cell with probability ``partner_prob``, and the partner is where the visual
evidence is weak on purpose -- small, often faint, partly hidden behind its anchor, under pixel
noise. The caption names the partner right after its anchor ("a red star with a moon").

The language prior that makes a trained model hallucinate the way MLLMs do has two parts:
co-occurrence (an anchor's partner is usually there), and noisy training captions that mention
the partner although it is absent (``caption_noise``), as machine-written captions of real
datasets do. So after "a red star" the model has learnt that "with a moon" is likely, and where
it cannot see the small partner clearly the prior wins. ``Scene.caption`` is always faithful;
``Scene.train_caption`` is the possibly noisy one, and ``Scene.noise`` names the classes it
mentions although they are absent.

Attribute questions (``Scene.attributes``) ask what a model should keep knowing while it learns
not to hallucinate: the colour, cell and size of an object that is there, and how many large
objects there are. They are deterministic functions of the drawn objects.

Object words are lower-case and singular; some classes have synonyms ("box" for square,
"plus sign" for cross), so captions exercise the CHAIR synonym table ``WORLD_VOCABULARY``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from chip.demo.shapes import SHAPES, SUPERSAMPLE, shape_mask
from chip.evaluation.chair import ObjectVocabulary

CLASSES: tuple[str, ...] = tuple(SHAPES)

# each pair co-occurs; either member is the other's "usual partner"
PARTNER_PAIRS: tuple[tuple[str, str], ...] = (
    ("star", "moon"),
    ("heart", "ring"),
    ("cross", "diamond"),
    ("arrow", "triangle"),
)
PARTNER: dict[str, str] = {a: b for a, b in PARTNER_PAIRS} | {b: a for a, b in PARTNER_PAIRS}

# other surface forms of a class, used in captions; all lower-case singular, one or two words
SYNONYMS: dict[str, tuple[str, ...]] = {
    "square": ("box", "block"),
    "circle": ("ball",),
    "moon": ("crescent",),
    "cross": ("plus sign",),
    "ring": ("donut",),
}

WORLD_VOCABULARY = ObjectVocabulary(
    name="shapes",
    synonyms={cls: cls for cls in CLASSES} | {syn: cls for cls, syns in SYNONYMS.items() for syn in syns},
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (225, 195, 35),
    "purple": (145, 55, 185),
}

CAPTION_PROMPT = "describe the image ."


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article ("a moon", "an arrow")."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def question_prompt(noun: str) -> str:
    """The POPE-style question about one object word ("is there a moon ?")."""
    return f"is there {with_article(noun)} ?"


# attribute answers: a grid cell's row and column words, an object's size, a count
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")
SIZES = ("large", "small")  # anchors are drawn large, partners small
COUNTS = ("zero", "one", "two", "three", "four")

# every word a prompt or an answer of this world can contain, for the word-level tokenizer
WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        "a an with , and . describe the image is there ? yes no".split()
        + list(COLOURS)
        + [w for surface in WORLD_VOCABULARY.synonyms for w in surface.split()]
        + "what colour where how many objects or".split()
        + [*ROWS, *COLUMNS, *SIZES, *COUNTS]
    )
)


@dataclass(frozen=True)
class WorldConfig:
    """How scenes are drawn and captioned. Defaults are the world the demo's base model learns."""

    seed: int = 0  # world seed: train and held-out scene streams both derive from it
    image_size: int = 48  # pixels per side; 3 cells of 16 px, each 2x2 patches of 8 px
    grid: int = 3  # cells per side; anchors occupy distinct cells
    max_anchors: int = 3  # anchors per scene, uniform in 1..max_anchors
    max_objects: int = 4  # anchors + partners; a partner is skipped once a scene holds this many
    anchor_radius: tuple[float, float] = (4.5, 6.0)  # px; big enough to be seen clearly
    jitter: float = 1.5  # px of random offset of an anchor from its cell centre
    partner_prob: float = 0.6  # chance a paired anchor brings its partner: the co-occurrence prior
    partner_radius: tuple[float, float] = (2.5, 3.5)  # px; small, so visual evidence is weak
    partner_alpha: tuple[float, float] = (0.4, 1.0)  # opacity range; low values make faint partners
    caption_noise: float = 0.4  # chance a training caption names an absent partner of an anchor
    synonym_prob: float = 0.3  # chance an object is named by a synonym instead of its class
    pixel_noise: float = 0.08  # std of Gaussian pixel noise, as a fraction of the 0-255 range
    class_weights: tuple[float, ...] = (1.6, 1.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # anchor
    # frequency per class in CLASSES order: circle and square are the "popular" classes of POPE

    def __post_init__(self) -> None:
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        if not 1 <= self.max_anchors <= min(self.grid**2, self.max_objects):
            raise ValueError(f"max_anchors {self.max_anchors} does not fit the grid and max_objects")
        if len(self.class_weights) != len(CLASSES):
            raise ValueError(f"class_weights needs {len(CLASSES)} entries, got {len(self.class_weights)}")
        for name in ("partner_prob", "caption_noise", "synonym_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; ``partner_of`` is the index of its anchor in ``Scene.objects``."""

    shape: str  # canonical class
    colour: str
    cell: int  # grid cell in reading order (0 = top left)
    center: tuple[float, float]  # px
    radius: float  # px
    alpha: float  # opacity; below 1 the object is faint
    partner_of: int | None = None


@dataclass(frozen=True)
class Question:
    """A POPE-style yes/no question; ``kind`` says how its object was picked."""

    text: str
    label: bool  # True = the object is in the image
    kind: Literal["positive", "random", "popular", "adversarial"]
    shape: str  # canonical class asked about


@dataclass(frozen=True)
class AttributeQuestion:
    """A question about an object that is in the image (or a count); ``answer`` is the right one."""

    text: str  # "what colour is the star ?"
    answer: str  # "red", "top left", "large", "two"
    kind: Literal["colour", "position", "size", "count"]


@dataclass(frozen=True)
class Scene:
    """A drawn scene with its faithful caption, its training caption and its questions."""

    seed: str
    image: Image.Image
    objects: tuple[SceneObject, ...]
    caption: str  # mentions exactly the drawn objects
    phrases: tuple[str, ...]  # the caption's per-anchor phrases, in reading order
    train_caption: str  # ``caption`` plus, sometimes, an absent partner (the language prior)
    noise: tuple[str, ...]  # classes ``train_caption`` mentions although they are absent
    questions: tuple[Question, ...] = field(repr=False)
    attributes: tuple[AttributeQuestion, ...] = field(repr=False, default=())

    @property
    def classes(self) -> frozenset[str]:
        """Ground truth for CHAIR: every drawn class, faint or hidden partners included."""
        return frozenset(obj.shape for obj in self.objects)


def scene_seed(world_seed: int, split: str, index: int) -> str:
    """The seed of scene ``index`` of a split ("train", "eval", ...); splits never overlap."""
    return f"shapes/{world_seed}/{split}/{index}"


def make_scene(seed: int | str | random.Random, config: WorldConfig | None = None) -> Scene:
    """Draw one scene; the same seed and config always give the same scene, pixel for pixel."""
    config = config or WorldConfig()
    rng = seed if isinstance(seed, random.Random) else random.Random(str(seed))
    seed_text = str(seed) if not isinstance(seed, random.Random) else f"rng:{rng.getrandbits(64)}"
    objects = _place_objects(rng, config)
    image = _render(objects, rng, config)
    phrases, train_caption, noise = _captions(objects, rng, config)
    questions = _questions(objects, rng, config)
    return Scene(
        seed_text,
        image,
        objects,
        join_phrases(phrases),
        phrases,
        train_caption,
        noise,
        questions,
        attribute_questions(objects, config),
    )


def blank_image(seed: int | str, config: WorldConfig | None = None) -> Image.Image:
    """Scene ``seed``'s image with its objects removed: the same background and pixel noise."""
    config = config or WorldConfig()
    rng = random.Random(str(seed))
    _place_objects(rng, config)  # consumes the same draws as make_scene, so the noise matches
    return _render((), rng, config)


def make_scenes(config: WorldConfig, split: str, count: int, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start+count-1`` of a split of the world (``"train"``, ``"eval"``)."""
    return [make_scene(scene_seed(config.seed, split, i), config) for i in range(start, start + count)]


def _place_objects(rng: random.Random, config: WorldConfig) -> tuple[SceneObject, ...]:
    cell_size = config.image_size / config.grid
    n_anchors = rng.randint(1, config.max_anchors)
    cells = sorted(rng.sample(range(config.grid**2), n_anchors))
    anchors: list[SceneObject] = []
    partners: list[SceneObject] = []
    for i, cell in enumerate(cells):
        shape = rng.choices(CLASSES, weights=config.class_weights)[0]
        colour = rng.choice(list(COLOURS))
        row, col = divmod(cell, config.grid)
        cx = (col + 0.5) * cell_size + rng.uniform(-config.jitter, config.jitter)
        cy = (row + 0.5) * cell_size + rng.uniform(-config.jitter, config.jitter)
        radius = rng.uniform(*config.anchor_radius)
        anchors.append(SceneObject(shape, colour, cell, (cx, cy), radius, 1.0))
        if (
            shape in PARTNER
            and rng.random() < config.partner_prob
            and n_anchors + len(partners) < config.max_objects
        ):
            # diagonal offset so the anchor, drawn on top, hides part of its partner
            p_radius = rng.uniform(*config.partner_radius)
            dx, dy = rng.choice([(1, 1), (1, -1), (-1, 1), (-1, -1)])
            dist = 0.75 * radius + 0.4 * p_radius
            p_colour = rng.choice([c for c in COLOURS if c != colour])
            alpha = rng.uniform(*config.partner_alpha)
            center = (cx + dx * dist / 1.414, cy + dy * dist / 1.414)
            partners.append(
                SceneObject(PARTNER[shape], p_colour, cell, center, p_radius, alpha, partner_of=i)
            )
    return tuple(anchors) + tuple(partners)


def _render(objects: tuple[SceneObject, ...], rng: random.Random, config: WorldConfig) -> Image.Image:
    size = config.image_size
    canvas = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), (128, 128, 128))
    # partners first, so anchors occlude them
    for obj in sorted(objects, key=lambda o: o.partner_of is None):
        mask = shape_mask(obj.shape, size, obj.center[0], obj.center[1], obj.radius, obj.alpha)
        canvas.paste(COLOURS[obj.colour], (0, 0, *canvas.size), mask)
    pixels = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    pixels = pixels + noise_rng.normal(0.0, 255.0 * config.pixel_noise, pixels.shape)  # (H, W, 3)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def _noun(rng: random.Random, shape: str, config: WorldConfig) -> str:
    if shape in SYNONYMS and rng.random() < config.synonym_prob:
        return rng.choice(SYNONYMS[shape])
    return shape


def _captions(
    objects: tuple[SceneObject, ...], rng: random.Random, config: WorldConfig
) -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """Faithful phrases and training caption: anchors in reading order, each with its partner."""
    present = {obj.shape for obj in objects}
    partner_of = {obj.partner_of: obj for obj in objects if obj.partner_of is not None}
    faithful, noisy, noise = [], [], []
    for i, obj in enumerate(objects):
        if obj.partner_of is not None:
            continue
        phrase = f"a {obj.colour} {_noun(rng, obj.shape, config)}"
        if i in partner_of:
            phrase += f" with {with_article(_noun(rng, partner_of[i].shape, config))}"
            faithful.append(phrase)
            noisy.append(phrase)
            continue
        faithful.append(phrase)
        partner = PARTNER.get(obj.shape)
        # drawn unconditionally, so the faithful caption does not depend on caption_noise
        draw, noun = rng.random(), _noun(rng, partner, config) if partner else ""
        if partner and partner not in present and partner not in noise and draw < config.caption_noise:
            noisy.append(f"{phrase} with {with_article(noun)}")
            noise.append(partner)
        else:
            noisy.append(phrase)
    return tuple(faithful), join_phrases(noisy), tuple(noise)


def join_phrases(phrases: list[str] | tuple[str, ...]) -> str:
    """A caption from object phrases: "p1 , p2 and p3 ." (the world's only sentence form)."""
    if len(phrases) == 1:
        return f"{phrases[0]} ."
    return " , ".join(phrases[:-1]) + f" and {phrases[-1]} ."


def _questions(
    objects: tuple[SceneObject, ...], rng: random.Random, config: WorldConfig
) -> tuple[Question, ...]:
    """One positive per present class; random, popular and adversarial negatives (POPE's splits)."""
    present = sorted({obj.shape for obj in objects}, key=CLASSES.index)
    questions = [Question(question_prompt(c), True, "positive", c) for c in present]
    asked = set(present)
    for c in present:
        partner = PARTNER.get(c)
        if partner and partner not in asked:
            questions.append(Question(question_prompt(partner), False, "adversarial", partner))
            asked.add(partner)
    absent = [c for c in CLASSES if c not in asked]
    if absent:
        choice = rng.choice(absent)
        questions.append(Question(question_prompt(choice), False, "random", choice))
        asked.add(choice)
    by_popularity = sorted(CLASSES, key=lambda c: -config.class_weights[CLASSES.index(c)])
    popular = next((c for c in by_popularity if c not in asked), None)
    if popular:
        questions.append(Question(question_prompt(popular), False, "popular", popular))
    return tuple(questions)


def cell_words(cell: int, grid: int = 3) -> str:
    """A cell's position in words: "top left", "middle centre", "bottom right" (3x3 grid)."""
    row, col = divmod(cell, grid)
    return f"{ROWS[row]} {COLUMNS[col]}"


def attribute_questions(
    objects: tuple[SceneObject, ...], config: WorldConfig
) -> tuple[AttributeQuestion, ...]:
    """What a model should keep knowing about the objects that are there, asked without a draw.

    Per class drawn exactly once (so the question has one answer): its size (anchors are large,
    partners small); for an anchor also its colour and its cell. Then the number of large
    objects (the anchors; faint partners are left out of the count). No random draw is consumed,
    so scenes are the same pixels and captions as without these questions.
    """
    shapes = [obj.shape for obj in objects]
    questions = []
    for obj in sorted(objects, key=lambda o: CLASSES.index(o.shape)):
        if shapes.count(obj.shape) != 1:
            continue
        anchor = obj.partner_of is None
        if anchor:
            questions.append(AttributeQuestion(f"what colour is the {obj.shape} ?", obj.colour, "colour"))
        if anchor and config.grid == len(ROWS):  # position words exist for the 3x3 grid only
            questions.append(
                AttributeQuestion(
                    f"where is the {obj.shape} ?", cell_words(obj.cell, config.grid), "position"
                )
            )
        questions.append(
            AttributeQuestion(
                f"is the {obj.shape} large or small ?", SIZES[0] if anchor else SIZES[1], "size"
            )
        )
    anchors = sum(obj.partner_of is None for obj in objects)
    if anchors < len(COUNTS):
        questions.append(AttributeQuestion("how many large objects ?", COUNTS[anchors], "count"))
    return tuple(questions)
