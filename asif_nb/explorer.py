"""The k/p explorer of notebook 02 (issue #13): move k, p and the number of anchor pairs, and watch one image's
prediction, its sparse relative representation and the anchors it shares with the winning prompt change.

    explorer = Explorer(anchors.anchor_images, anchors.anchor_texts, embedded, captions=anchors.collection.captions)
    fig = explorer.show(k=100, p=5)      # sliders "k", "p", "pairs", "image" in JupyterLab / Colab;
                                         # one static Figure (returned) under papermill, nbclient, nbmake

``compute(k, p, pairs, image)`` is the whole recomputation and returns an :class:`Exploration` (numbers only);
``figure(exploration)`` draws it; ``show`` wires both to ipywidgets sliders when a person is at the screen
(``interactive.has_frontend``), and otherwise draws the one figure, so no widget is left in a saved output.
Every number is the :class:`~asif_nb.model.AsifModel`'s: ``pairs`` = n keeps the first n anchor pairs (as the
paper's Figure 4 does), and ``tests/test_explorer.py`` checks each setting against a fresh
``AsifModel(anchor_images[:n], anchor_texts[:n], k=k, p=p)``.

Also here, for notebook 02's exercise: ``similarities`` (one query's cosine similarities to every anchor of its
modality, in blocks) and ``Explorer.differences`` (how far a hand-written relative representation is from the
model's, per case), so the check compares against the model and never shows the answer.
"""
from __future__ import annotations

import copy
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .metrics import predict, wilson_interval
from .model import AsifModel, check_k, check_p, class_scores

__all__ = ["Exploration", "Explorer", "similarities"]

_BLOCK = 100_000  # anchor rows per block: 1.6M float32 anchors at once would not fit in memory


def similarities(anchor_rows, query, block: int = _BLOCK) -> np.ndarray:
    """The (N,) float32 cosine similarities of one embedding ``query`` (d,) to each of the N anchor rows (N, d)
    of its modality (numpy, a memmap or a bundle's ``ShardedRows``), in blocks of ``block`` rows."""
    q = np.asarray(query, dtype=np.float32).ravel()
    q = q / np.linalg.norm(q)
    n = len(anchor_rows)
    s = np.empty(n, dtype=np.float32)
    for start in range(0, n, block):
        rows = np.asarray(anchor_rows[start:start + block], dtype=np.float32)
        s[start:start + len(rows)] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)) @ q
    return s


def _prefix(rows, n: int):
    if n == len(rows):
        return rows
    return rows.prefix(n) if hasattr(rows, "prefix") else rows[:n]


@dataclass
class Exploration:
    """One setting of the explorer and everything it recomputed (the model's numbers, nothing else).

    ``representation``: the image's relative representation (1, pairs) CSR; ``scores``: its class scores
    (``reduce`` rule); ``predicted``: the class, -1 for no answer (a tied best score); ``prompt``: the row of
    the prompt compared in ``shared`` — the best template of the predicted class (of the top-scored class when
    there is no answer); ``prompt_representation`` its (1, pairs) CSR row; ``shared``: the anchors non-zero in
    both, largest contribution first, as ``AsifModel.explain`` lists them (plus ``caption`` when known);
    ``accuracy`` on ``n_eval`` images of the set (None when ``n_eval`` is 0), with its 95 % Wilson ``interval``.
    """

    k: int
    p: float
    pairs: int
    image: int
    representation: object
    scores: np.ndarray
    predicted: int
    label: int | None
    prompt: int
    prompt_text: str
    prompt_representation: object
    shared: list = field(default_factory=list)
    accuracy: float | None = None
    n_eval: int = 0
    interval: tuple | None = None
    k_capped: bool = False
    reduce: str = "max"
    class_names: list = field(default_factory=list, repr=False)

    @property
    def compared_class(self) -> int:
        """The class of the compared prompt: the predicted one, or the top-scored one when there is no answer."""
        return int(np.argmax(self.scores)) if self.predicted < 0 else int(self.predicted)

    @property
    def score(self) -> float:
        """The compared class's score (for ``reduce="max"`` the compared prompt's, ``prompt_score``)."""
        return float(self.scores[self.compared_class])

    @property
    def prompt_score(self) -> float:
        """rr(image) · rr(compared prompt): the sum of the ``shared`` contributions."""
        return float(sum(item["contribution"] for item in self.shared))

    def name(self, c: int | None) -> str:
        if c is None:
            return "unknown"
        return "no answer (tied best score)" if c < 0 else str(self.class_names[c])

    def summary(self) -> str:
        """Plain-text lines saying what this setting gives (the explorer prints them above its figure)."""
        kept = self.representation.nnz
        verdict = "" if self.label is None else ("  ✓" if self.predicted == self.label else
                                                 f"  ✗ (true: {self.name(self.label)})")
        if self.predicted < 0:
            tied = int((self.scores == self.scores.max()).sum())
            answer = f"no answer: its best score ({self.scores.max():.4f}) is shared by {tied} classes"
            compared = f"the first of them, “{self.name(self.compared_class)}”: its best prompt"
        else:
            answer, compared = self.name(self.predicted) + verdict, "its best prompt"
        lines = [f"k = {self.k}{' (capped at the number of pairs)' if self.k_capped else ''}, p = {self.p:g}, "
                 f"{self.pairs:,} pairs: image {self.image} → {answer}",
                 f"its representation keeps {kept} non-zero weight{'s' if kept != 1 else ''}; {compared} "
                 f"“{self.prompt_text}” shares {len(self.shared)} anchor{'s' if len(self.shared) != 1 else ''} "
                 "with it " + (f"(score {self.score:.4f})" if self.reduce == "max" else
                               f"(its score {self.prompt_score:.4f}; the class's {self.reduce}-rule score "
                               f"{self.score:.4f})")]
        if self.accuracy is not None:
            lo, hi = self.interval
            lines.append(f"top-1 accuracy on {self.n_eval} images of the set at this setting: "
                         f"{100 * self.accuracy:.1f} % (95 % Wilson interval {100 * lo:.1f}–{100 * hi:.1f} %)")
        return "\n".join(lines)


class Explorer:
    """Recompute one image's zero-shot prediction for any k, p and number of pairs (see the module docstring).

    ``anchor_images`` (N, d1) / ``anchor_texts`` (N, d2): the anchors (numpy, memmap or ``ShardedRows``), row i
    of each = pair i. ``embedded``: a classification set in embedding space (``pipeline.EvalEmbeddings``: its
    ``images``, class-major ``prompts``, ``n_templates``, ``labels``, ``class_names``, ``templates``, and its
    ``evalset`` for the thumbnails). ``captions``: the anchor captions, to name shared anchors. ``n_eval``: the
    images (evenly spread over the set) on which each setting's accuracy is measured; 0 skips it. ``ids``: the
    pair ids (``explain``'s), default the anchor rows (``model.ids`` when ``model`` is given). ``model``: an
    ``AsifModel`` over all these anchors (the notebook's): the explorer then serves every setting with all pairs
    from shallow copies of it (its normalised anchors shared, no second copy in memory) and never changes it.
    """

    def __init__(self, anchor_images, anchor_texts, embedded, *, model: AsifModel | None = None, captions=None,
                 ids=None, reduce: str = "max", n_eval: int = 500, device: str = "auto", clamp_negative: bool = True):
        if getattr(embedded, "prompts", None) is None:
            raise ValueError(f"{getattr(embedded, 'name', 'this set')} has no class prompts: the explorer needs a "
                             "classification set.")
        if len(anchor_images) != len(anchor_texts):
            raise ValueError("anchor_images and anchor_texts have different numbers of rows.")
        self.anchor_images, self.anchor_texts, self.embedded = anchor_images, anchor_texts, embedded
        self.captions = list(captions) if captions is not None else None
        if model is not None:
            if model.n_pairs != len(anchor_images):
                raise ValueError(f"model has {model.n_pairs} pairs but the anchors {len(anchor_images)}: pass the "
                                 "anchors the model was built from.")
            clamp_negative, ids = model.clamp_negative, (model.ids if ids is None else ids)
        self.base = model
        self.ids = list(ids) if ids is not None else None
        self.reduce, self.device, self.clamp_negative = reduce, device, clamp_negative
        self.n_pairs = len(anchor_images)
        n_images = len(embedded.images)
        self.eval_rows = (np.unique(np.linspace(0, n_images - 1, min(int(n_eval), n_images)).round().astype(int))
                          if n_eval else np.array([], dtype=int))
        try:
            from .prompts import prompts_for

            self.prompt_texts = prompts_for(embedded.class_names, embedded.templates)
        except Exception:  # precomputed embeddings may come without their templates
            self.prompt_texts = None
        self._models: dict[int, AsifModel] = {}
        self.last: Exploration | None = None

    # -- the recomputation ------------------------------------------------------------------------------
    def model(self, k: int, p: float, pairs: int | None = None) -> AsifModel:
        """The ASIF model over the first ``pairs`` anchor pairs with this k and p (k capped at ``pairs``).
        Models are kept for all the pairs and for the last other number of pairs, so moving k or p rebuilds
        nothing."""
        pairs = self.n_pairs if pairs is None else check_k(pairs, self.n_pairs, name="pairs")
        model = self._models.get(pairs)
        if model is None and self.base is not None and pairs == self.n_pairs:
            model = copy.copy(self.base)  # its own k and p; the anchors (and ids) are the base model's, shared
            self._models[pairs] = model
        if model is None:
            model = AsifModel(_prefix(self.anchor_images, pairs), _prefix(self.anchor_texts, pairs), k=min(k, pairs),
                              p=p, ids=None if self.ids is None else self.ids[:pairs],
                              clamp_negative=self.clamp_negative, device=self.device)
            keep = [n for n in self._models if n == self.n_pairs][-1:] or list(self._models)[-1:]
            self._models = {**{n: self._models[n] for n in keep}, pairs: model}
        model.k, model.p = min(check_k(k), pairs), check_p(p, self.clamp_negative)
        return model

    def compute(self, k: int, p: float, pairs: int | None = None, image: int = 0) -> Exploration:
        """Everything the explorer shows for one setting, from the model (see :class:`Exploration`)."""
        embedded = self.embedded
        pairs = self.n_pairs if pairs is None else int(pairs)
        image = int(image)
        if not 0 <= image < len(embedded.images):
            raise ValueError(f"image={image}: the set has {len(embedded.images)} images (0 to {len(embedded.images) - 1}).")
        model = self.model(k, p, pairs)
        prompts = model.encode_text(embedded.prompts)
        rows = model.encode_image(np.asarray(embedded.images[image:image + 1]))
        n_templates = embedded.n_templates
        scores = class_scores(rows, prompts, n_templates, self.reduce)[0]
        predicted = int(predict(scores[None])[0])
        winner = int(np.argmax(scores)) if predicted < 0 else predicted
        per_prompt = np.asarray((rows @ prompts[winner * n_templates:(winner + 1) * n_templates].T).todense()).ravel()
        prompt = winner * n_templates + int(np.argmax(per_prompt))   # the first best template on a tie
        prompt_row = prompts[prompt]
        shared, in_image, in_text = np.intersect1d(rows.indices, prompt_row.indices, assume_unique=True,
                                                   return_indices=True)
        image_weight, text_weight = rows.data[in_image], prompt_row.data[in_text]
        contribution = image_weight * text_weight
        order = np.lexsort((shared, -contribution))
        listed = [{"id": model.ids[shared[i]], "anchor": int(shared[i]), "image_weight": float(image_weight[i]),
                   "text_weight": float(text_weight[i]), "contribution": float(contribution[i]),
                   **({"caption": self.captions[shared[i]]} if self.captions is not None else {})} for i in order]
        accuracy = interval = None
        if len(self.eval_rows):
            pred = predict(class_scores(model.encode_image(np.asarray(embedded.images)[self.eval_rows]), prompts,
                                        n_templates, self.reduce))
            hits = int((pred == np.asarray(embedded.labels)[self.eval_rows]).sum())
            accuracy, interval = hits / len(self.eval_rows), wilson_interval(hits, len(self.eval_rows))
        label = int(embedded.labels[image]) if getattr(embedded, "labels", None) is not None else None
        text = self.prompt_texts[prompt] if self.prompt_texts is not None else f"prompt {prompt}"
        self.last = Exploration(k=model.k, p=model.p, pairs=pairs, image=image, representation=rows, scores=scores,
                                predicted=predicted, label=label, prompt=prompt, prompt_text=text,
                                prompt_representation=prompt_row, shared=listed, accuracy=accuracy,
                                n_eval=len(self.eval_rows), interval=interval, k_capped=int(k) > pairs,
                                reduce=self.reduce, class_names=list(embedded.class_names))
        return self.last

    # -- notebook 02's exercise ---------------------------------------------------------------------------
    def differences(self, function, cases) -> dict[str, float]:
        """How far ``function(s, k, p)`` (a hand-written relative representation: s = one query's (N,) cosine
        similarities to its modality's anchors, returning the dense (N,) row) is from the model's row, per case.

        ``cases``: ``(label, modality, embedding, k, p)`` with modality "image" or "text". Returns
        ``{"<label> at k=…, p=…": max |function row − AsifModel row|}`` over all N pairs."""
        gaps = {}
        for label, modality, embedding, k, p in cases:
            half = self.anchor_images if modality == "image" else self.anchor_texts
            model = self.model(k, p)
            encode = model.encode_image if modality == "image" else model.encode_text
            expected = encode(np.asarray(embedding)[None]).toarray()[0]
            mine = function(similarities(half, embedding), model.k, model.p)
            mine = np.asarray(mine.toarray() if hasattr(mine, "toarray") else mine, dtype=np.float64).ravel()
            if mine.shape != expected.shape:
                raise ValueError(f"your function returned {mine.size} values; a relative representation has one per "
                                 f"anchor pair ({expected.size}).")
            gaps[f"{label} at k={model.k}, p={model.p:g}"] = float(np.abs(mine - expected).max())
        return gaps

    # -- the picture ------------------------------------------------------------------------------------------
    def figure(self, result: Exploration | None = None, top: int = 8, pyplot: bool = True):
        """One figure of ``result`` (default: the last computed): the image, its representation against the
        compared prompt's (shared anchors marked), the class scores and the shared anchors' contributions.
        ``pyplot=False``: a bare ``matplotlib.figure.Figure`` that pyplot's figure manager never sees."""
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        result = result or self.last
        if result is None:
            raise ValueError("nothing computed yet: call compute(k, p, pairs, image) first.")
        evalset = getattr(self.embedded, "evalset", None)
        fig = plt.figure(figsize=(13, 7.2)) if pyplot else Figure(figsize=(13, 7.2))
        grid = fig.add_gridspec(2, 3, width_ratios=(1, 1.6, 1.6), height_ratios=(1, 1.25))
        ax_image = fig.add_subplot(grid[0, 0])
        ax_rr = fig.add_subplot(grid[0, 1:])
        ax_scores = fig.add_subplot(grid[1, :2])
        ax_shared = fig.add_subplot(grid[1, 2])
        ax_image.axis("off")
        if evalset is not None and getattr(evalset, "images", None) is not None:
            from .plots.base import _as_image

            ax_image.imshow(_as_image(evalset.images[result.image]), cmap="gray")
        else:
            ax_image.text(0.5, 0.5, "(precomputed embeddings:\nno picture)", ha="center", va="center", fontsize=9)
        truth = "" if result.label is None else f"\ntrue: {result.name(result.label)}"
        ax_image.set_title(f"image {result.image}{truth}", fontsize=9)
        _mirrored_representations(ax_rr, result)
        _class_scores(ax_scores, result)
        _shared_anchors(ax_shared, result, top)
        fig.suptitle(f"k = {result.k}, p = {result.p:g}, {result.pairs:,} pairs → {result.name(result.predicted)}"
                     + ("" if result.accuracy is None else
                        f"   ·   accuracy on {result.n_eval} images {100 * result.accuracy:.1f} % "
                        f"[{100 * result.interval[0]:.1f}, {100 * result.interval[1]:.1f}]"), fontsize=11)
        fig.tight_layout()
        return fig

    # -- sliders ------------------------------------------------------------------------------------------
    def controls(self, k: int, p: float, pairs: int | None = None, image: int = 0) -> dict:
        """The ipywidgets sliders, by name, with stable ``description``\\ s ("k", "p", "pairs", "image") for a
        browser test to find. They update on release (``continuous_update=False``): each move recomputes."""
        import ipywidgets as widgets

        pairs = self.n_pairs if pairs is None else int(pairs)
        step = max(1, self.n_pairs // 500)  # about 500 stops; all the pairs is one of them
        lowest = self.n_pairs - step * ((self.n_pairs - min(self.n_pairs, 10)) // step)
        style, layout = {"description_width": "48px"}, widgets.Layout(width="460px")
        common = dict(continuous_update=False, style=style, layout=layout)
        return {
            "k": widgets.IntSlider(value=int(k), min=1, max=min(self.n_pairs, max(1000, int(k))), step=1,
                                   description="k", **common),
            "p": widgets.FloatSlider(value=float(p), min=1.0, max=16.0, step=0.5, readout_format=".1f",
                                     description="p", **common),
            "pairs": widgets.IntSlider(value=pairs, min=lowest, max=self.n_pairs, step=step, description="pairs",
                                       **common),
            "image": widgets.IntSlider(value=int(image), min=0, max=len(self.embedded.images) - 1, step=1,
                                       description="image", **common),
        }

    def _draw(self, k, p, pairs, image):
        import io

        from IPython.display import Image, display

        result = self.compute(k, p, pairs, image)
        print(result.summary())
        # a Figure outside pyplot, rendered here to PNG bytes: a pyplot figure drawn in a slider's callback came out
        # blank now and then in JupyterLab (tests/test_browser.py), pyplot's global figure state being shared with
        # the inline backend's own flushing
        fig = self.figure(result, pyplot=False)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=72, bbox_inches="tight", facecolor="white")
        display(Image(data=png.getvalue(), format="png"))

    def show(self, k: int, p: float, pairs: int | None = None, image: int = 0, interactive: bool | None = None):
        """Sliders (``interactive=True``; default: when ``interactive.has_frontend()``, i.e. a person's JupyterLab,
        Notebook, VS Code or Colab) that recompute and redraw on each move; returns None, the widgets are displayed.
        Otherwise (papermill, nbclient, nbmake, CI) prints the summary of this one setting and returns its
        Figure, so a batch run saves a picture and no widget."""
        from .interactive import has_frontend

        if not (has_frontend() if interactive is None else interactive):
            result = self.compute(k, p, pairs, image)
            print(result.summary())
            return self.figure(result)
        import ipywidgets as widgets
        from IPython.display import display

        sliders = self.controls(k, p, pairs, image)
        output = widgets.interactive_output(self._draw, sliders)
        self.widget = widgets.VBox([widgets.HTML("<b>ASIF k/p explorer</b> — move a slider, release it, and the "
                                                 "prediction, the representation and the shared anchors are "
                                                 "recomputed"), *sliders.values(), output])
        self.sliders = sliders
        display(self.widget)
        return None


def _mirrored_representations(ax, result: Exploration):
    image, prompt = result.representation, result.prompt_representation
    shared = [item["anchor"] for item in result.shared]
    ax.vlines(image.indices, 0, image.data, lw=1, color="C0", label=f"image ({image.nnz} kept)")
    ax.vlines(prompt.indices, 0, -prompt.data, lw=1, color="C1", label=f"prompt ({prompt.nnz} kept)")
    if shared:
        at = np.asarray(shared)
        ax.plot(at, image[0, at].toarray().ravel(), "v", color="C3", ms=5,
                label=f"{len(shared)} shared anchor{'s' if len(shared) != 1 else ''}")
        ax.plot(at, -prompt[0, at].toarray().ravel(), "^", color="C3", ms=5)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlim(-0.5, result.pairs - 0.5)
    ax.set_xlabel(f"anchor pair (row of the first {result.pairs:,})")
    ax.set_ylabel("weight: image ↑, prompt ↓")
    ax.set_title(f"sparse relative representations: the image and “{textwrap.shorten(result.prompt_text, 48)}”",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _class_scores(ax, result: Exploration, shown: int = 10):
    scores = np.asarray(result.scores, dtype=float)
    order = np.lexsort((np.arange(len(scores)), -scores))[:shown]
    colours = ["C2" if c == result.label == result.predicted else "C3" if c == result.label else
               "C0" if c == result.predicted else "0.6" for c in order]
    ax.barh(np.arange(len(order)), scores[order], color=colours)
    ax.set_yticks(np.arange(len(order)), [textwrap.shorten(str(result.class_names[c]), 28) for c in order],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("class score: rr(image) · rr(prompt)")
    ax.set_ylabel("class (best first)")
    note = ""
    if result.label is not None and result.label not in order:
        rank = int((scores > scores[result.label]).sum()) + 1
        note = f"; true class ranked {rank} (score {scores[result.label]:.4f})"
    key = ("green: predicted = true" if result.label is not None and result.predicted == result.label else
           "blue: predicted, red: true" if result.predicted >= 0 else "red: true; no answer (tied best score)")
    which = f"all {len(scores)} classes" if len(order) == len(scores) else f"the {len(order)} best of {len(scores)} classes"
    ax.set_title(f"{which} ({key}){note}", fontsize=9)


def _shared_anchors(ax, result: Exploration, top: int):
    listed = result.shared[:top]
    if not listed:
        ax.text(0.5, 0.5, "no anchor shared with this prompt:\nits score is 0", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        names = [textwrap.shorten(str(item.get("caption", item["id"])), 34) for item in listed]
        ax.barh(np.arange(len(listed)), [item["contribution"] for item in listed], color="C3")
        ax.set_yticks(np.arange(len(listed)), names, fontsize=8)
        ax.invert_yaxis()
    ax.set_xlabel("contribution: image weight × prompt weight")
    ax.set_ylabel("shared anchor (its caption)")
    more = len(result.shared) - len(listed)
    ax.set_title(f"{len(result.shared)} shared anchor{'s' if len(result.shared) != 1 else ''}"
                 + (f" (the {len(listed)} largest; {more} more)" if more > 0 else ""), fontsize=9)
