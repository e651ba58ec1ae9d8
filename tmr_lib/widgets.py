"""Interactive views for the notebooks (ipywidgets), each with a plain-picture fallback.

Every explorer here builds its widget and can also be drawn directly (``redraw(...)`` returns
a matplotlib Figure), so a headless run, nbval or an HTML handout still shows the picture.

* :func:`search_explorer` -- a query (picked by number, or an uploaded image) and its top-20
  cites with cosine scores, correct cites framed green (notebook 05).
* :func:`augment_explorer` -- a mark (picked from a list) and the views the training draws of it:
  weak, strong, pseudo-logo or the test-time zoom-out, for any seed (notebook 03).
"""
from __future__ import annotations


# ----------------------------------------------------------------------------------------
# search_explorer: a query, its top-k with scores, correct cites framed (notebook 05)
# ----------------------------------------------------------------------------------------
class SearchExplorer:
    """Pick a query (by its row number) or upload an image; see its top-``k`` cites with scores.

    Built by :func:`search_explorer`. ``explorer.widget`` is the ipywidgets box (displaying the
    explorer shows it); ``explorer.redraw(i)`` draws query ``i`` and returns the matplotlib Figure
    (call it directly where widgets are not live, e.g. a headless run or an HTML handout);
    ``explorer.search_image(img)`` does the same for any image (a path, bytes or a PIL image).
    ``explorer.last`` holds the last result: gid, ids, scores, hits (ranks of correct cites, 1-based).
    """

    def __init__(self, comp, index, query_emb=None, *, model=None, answers=None, queries=None, k: int = 20,
                 image_size: int | None = None, test_scale: float = 0.9, tta_flip: bool = False,
                 thumb: int = 72, per_row: int = 10, start: int = 0):
        import numpy as np

        self.comp = comp
        self.index = index
        self.model = model
        self.k = int(k)
        self.test_scale, self.tta_flip = test_scale, tta_flip
        self.image_size = image_size or getattr(model, "image_size", None) or 112
        self.thumb, self.per_row = int(thumb), int(per_row)
        self.queries = (comp.test if queries is None else queries).reset_index(drop=True)
        if query_emb is None:
            if model is None:
                raise ValueError("search_explorer needs query_emb (one row per query) or a model to compute it")
            query_emb = self._embed_paths(list(self.queries["path"]))
        self.query_emb = np.ascontiguousarray(query_emb, dtype=np.float32)
        if len(self.query_emb) != len(self.queries):
            raise ValueError(f"{len(self.query_emb)} query embeddings for {len(self.queries)} queries")
        self.truth, self.category = _answers_maps(answers)
        self.cite_path = dict(zip(comp.cite["gid"].astype(str), comp.cite["path"]))
        self._thumbs: dict[str, object] = {}
        self.current = int(start)
        self.last: dict = {}
        self._build_widget()

    # -- searching -------------------------------------------------------------------------
    def _embed_paths(self, paths):
        from .embed import embed_images
        from .preprocess import load_mark
        from .augment import pil_to_uint8
        import torch

        x = torch.stack([pil_to_uint8(load_mark(p, self.image_size)) for p in paths])
        return embed_images(self.model, x, batch_size=64, test_scale=self.test_scale, tta_flip=self.tta_flip,
                            progress=False)

    def search(self, i: int):
        """(ids, scores) of query row ``i``: its top-``k`` cite gids and cosine similarities."""
        ids, scores = self.index.search(self.query_emb[int(i):int(i) + 1], self.k)
        return list(ids[0]), [float(s) for s in scores[0]]

    def redraw(self, i: int | None = None):
        """Draw query row ``i`` (default: the current one) with its top-k; return the Figure."""
        if i is not None:
            self.current = int(i) % len(self.queries)
        i = self.current
        gid = str(self.queries["gid"].iloc[i])
        ids, scores = self.search(i)
        correct = self.truth.get(gid, set())
        label = _category_label(self.category.get(gid))
        title = f"query {i} · gid {gid}" + (f" · {label}" if label else "")
        fig = self._draw(self._thumb(self.queries["path"].iloc[i]), title, ids, scores, correct, bool(self.truth))
        self.last = {"gid": gid, "ids": ids, "scores": scores,
                     "hits": [r for r, c in enumerate(ids, start=1) if c in correct]}
        self._show(fig)
        return fig

    def search_image(self, image, name: str = "uploaded image", correct=()):
        """Embed any image (path, bytes or PIL image) with the model, search, draw; return the Figure.

        ``correct``: cite gids you expect to find (framed green when they come up)."""
        import io

        import torch
        from PIL import Image

        from .augment import pil_to_uint8
        from .embed import embed_images
        from .preprocess import load_mark_image, open_image, to_rgb

        if self.model is None:
            raise ValueError("search_explorer was built without a model: pass model=... to search your own images")
        if isinstance(image, (bytes, bytearray, memoryview)):
            with Image.open(io.BytesIO(bytes(image))) as im:
                im.load()
                img = to_rgb(im)
        elif isinstance(image, Image.Image):
            img = to_rgb(image)
        else:
            img = open_image(image)
            name = str(getattr(image, "name", name)) if name == "uploaded image" else name
        mark = load_mark_image(img, self.image_size)
        emb = embed_images(self.model, pil_to_uint8(mark)[None], batch_size=1, test_scale=self.test_scale,
                           tta_flip=self.tta_flip, progress=False)
        ids, scores = self.index.search(emb, self.k)
        ids, scores = list(ids[0]), [float(s) for s in scores[0]]
        correct = set(map(str, correct or ()))
        fig = self._draw(load_mark_image(img, self.thumb), name, ids, scores, correct, bool(correct))
        self.last = {"gid": None, "ids": ids, "scores": scores,
                     "hits": [r for r, c in enumerate(ids, start=1) if c in correct]}
        self._show(fig)
        return fig

    # -- drawing ---------------------------------------------------------------------------
    def _thumb(self, path):
        from .preprocess import load_mark

        key = str(path)
        if key not in self._thumbs:
            if len(self._thumbs) > 4000:
                self._thumbs.clear()
            self._thumbs[key] = load_mark(path, self.thumb)
        return self._thumbs[key]

    def _draw(self, query_img, title, ids, scores, correct, framed):
        from matplotlib.figure import Figure

        import matplotlib_fontja  # noqa: F401 - Japanese titles

        n = len(ids)
        rows = max(1, -(-n // self.per_row))
        cols = self.per_row + 2  # query, a gap, then the results
        fig = Figure(figsize=(cols * 0.95, rows * 1.25 + 0.45))
        gs = fig.add_gridspec(rows, cols, width_ratios=[1.6, 0.15] + [1] * self.per_row)
        ax = fig.add_subplot(gs[:, 0])
        ax.imshow(query_img)
        found = [r for r, c in enumerate(ids, start=1) if c in correct]
        verdict = (f"hit @{found[0]}" if found else "miss") if framed and correct else ""
        ax.set_title("query 出願" + (f"\n{verdict}" if verdict else ""), fontsize=8,
                     color="#2ca02c" if found else ("#d62728" if verdict else "black"))
        _frame(ax, "#1f77b4", 3.0)
        for r, (cid, s) in enumerate(zip(ids, scores)):
            ax = fig.add_subplot(gs[r // self.per_row, 2 + r % self.per_row])
            if cid in self.cite_path:
                ax.imshow(self._thumb(self.cite_path[cid]))
            hit = cid in correct
            ax.set_title(f"#{r + 1}  {s:.3f}", fontsize=6.5, color="#2ca02c" if hit else "#555555")
            _frame(ax, "#2ca02c" if hit else "#cccccc", 3.5 if hit else 0.6)
        hint = " (correct cites framed green)" if framed and correct else ""
        fig.suptitle(f"{title}: top-{n} cites 引用 with cosine scores{hint}", fontsize=9)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.55 / fig.get_figheight(),
                            wspace=0.08, hspace=0.35)
        return fig

    def _show(self, fig) -> None:
        """Inside the live widget, put the picture into its output area (a direct call just returns the
        Figure). The PNG is set on the Output widget's state rather than captured with ``with output:``,
        so it works from any callback and in headless runs (nbclient) alike."""
        if getattr(self, "_in_callback", False):
            import base64
            import io

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            png = base64.b64encode(buf.getvalue()).decode("ascii")
            self.output.outputs = ({"output_type": "display_data", "metadata": {},
                                    "data": {"image/png": png, "text/plain": repr(fig)}},)

    # -- the widget ------------------------------------------------------------------------
    def _build_widget(self) -> None:
        import ipywidgets as widgets

        n = len(self.queries)
        self.picker = widgets.BoundedIntText(value=self.current, min=0, max=max(0, n - 1), step=1,
                                             description="query #", layout=widgets.Layout(width="170px"))
        self.prev_button = widgets.Button(description="◀", layout=widgets.Layout(width="40px"), tooltip="previous")
        self.next_button = widgets.Button(description="▶", layout=widgets.Layout(width="40px"), tooltip="next")
        self.random_button = widgets.Button(description="random", icon="random", layout=widgets.Layout(width="90px"))
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload a mark",
                                         disabled=self.model is None)
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self._rng = __import__("numpy").random.default_rng(0)

        def run(fn):
            self._in_callback = True
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - shown to the user, not raised into the event loop
                self.status.value = f"<span style='color:#c62828'>{type(e).__name__}: {e}</span>"
            finally:
                self._in_callback = False

        def on_pick(change):
            run(lambda: (self.redraw(change["new"]), self._say()))

        def step(d):
            self.picker.value = (self.picker.value + d) % max(1, n)  # triggers on_pick

        def on_upload(change):
            for name, data in _uploaded_files(change["new"]):
                run(lambda: (self.search_image(data, name), self._say(name)))

        self.picker.observe(on_pick, names="value")
        self.prev_button.on_click(lambda _: step(-1))
        self.next_button.on_click(lambda _: step(+1))
        self.random_button.on_click(lambda _: setattr(self.picker, "value", int(self._rng.integers(n))))
        self.upload.observe(on_upload, names="value")
        controls = widgets.HBox([self.picker, self.prev_button, self.next_button, self.random_button, self.upload])
        self.widget = widgets.VBox([controls, self.status, self.output])
        run(lambda: (self.redraw(self.current), self._say()))

    def _say(self, uploaded: str | None = None) -> None:
        import html

        r = self.last
        if uploaded:
            text = f"{html.escape(uploaded)}: best match {r['ids'][0]} (score {r['scores'][0]:.3f})"
        elif r.get("gid") in self.truth:
            text = (f"gid {r['gid']}: correct cite at rank {r['hits'][0]}" if r["hits"]
                    else f"gid {r['gid']}: no correct cite in the top {self.k}")
        else:
            text = f"gid {r.get('gid')}"
        self.status.value = f"<span style='font-size:90%'>{text}</span>"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _frame(ax, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_color(colour)
        s.set_linewidth(width)


def _category_label(cat) -> str:
    from .data import CATEGORIES

    return CATEGORIES.get(int(cat), "") if cat is not None else ""


def _answers_maps(answers) -> tuple[dict, dict]:
    """(gid -> set of correct cite gids, gid -> category) from the host's answers (or a dict)."""
    if answers is None:
        return {}, {}
    if isinstance(answers, dict):
        return {str(g): set(map(str, c)) for g, c in answers.items()}, {}
    truth = {str(g): set(map(str, c)) for g, c in zip(answers["gid"], answers["cite_gids"])}
    category = dict(zip(answers["gid"].astype(str), answers["category"])) if "category" in answers else {}
    return truth, category


def _uploaded_files(value):
    """(name, bytes) pairs from a FileUpload value (ipywidgets 8: a tuple of dicts; 7: a dict)."""
    if isinstance(value, dict):
        return [(name, bytes(v["content"])) for name, v in value.items()]
    return [(v.get("name", "upload"), bytes(v["content"])) for v in value or ()]


def search_explorer(comp, index, query_emb=None, *, model=None, answers=None, queries=None, k: int = 20,
                    image_size: int | None = None, test_scale: float = 0.9, tta_flip: bool = False,
                    thumb: int = 72, per_row: int = 10, start: int = 0) -> SearchExplorer:
    """An interactive search explorer: pick a query or upload an image, see its top-``k`` with scores.

        from tmr_lib.widgets import search_explorer
        explorer = search_explorer(comp, index, test_emb, model=model, answers=answers)
        explorer              # the widget: query number, previous / next / random, upload
        explorer.redraw(3)    # the picture of query 3 (works without a live widget too)

    ``comp``: the competition (image paths); ``index``: a :class:`tmr_lib.search.SearchIndex`
    over the cites; ``query_emb``: one embedding per row of ``queries`` (default ``comp.test``),
    computed with ``model`` when left out; ``model``: the encoder, needed for uploads;
    ``answers``: the host's answers (``load_answers``) or ``{gid: correct cite gids}`` to frame
    the correct cites green (leave it out for a participant's view).
    """
    return SearchExplorer(comp, index, query_emb, model=model, answers=answers, queries=queries, k=k,
                          image_size=image_size, test_scale=test_scale, tta_flip=tta_flip, thumb=thumb,
                          per_row=per_row, start=start)


# ----------------------------------------------------------------------------------------
# augment_explorer: the augmentations of a chosen mark (notebook 03)
# ----------------------------------------------------------------------------------------
#: explorer modes -> what they show
AUGMENT_MODES = {
    "weak": "weak 弱: RGB shift, gray, horizontal flip, random resized crop 0.7-1",
    "strong": "strong 強: weak colours/flip + blur, zoom-out, crop 0.4-1 or pseudo-logo",
    "pseudo-logo": "pseudo-logo 擬似ロゴ: the mark shrunk beside Latin / Japanese text",
    "test-time": "test time テスト時: Affine zoom-out on white (the kit uses 0.9)",
}


def _as_uint8_mark(mark, size: int):
    """A path, PIL image, array or tensor -> uint8 tensor (3, size, size), trimmed and padded like every stage."""
    import numpy as np
    import torch
    from PIL import Image

    from .augment import pil_to_uint8
    from .preprocess import load_mark, load_mark_image

    if isinstance(mark, torch.Tensor) and mark.dtype == torch.uint8 and mark.ndim == 3 and mark.shape[0] == 3:
        if mark.shape[-1] != size:
            mark = torch.nn.functional.interpolate(mark[None].float(), size=(size, size), mode="bilinear",
                                                   antialias=True, align_corners=False)[0].round().clamp(0, 255)
        return mark.to(torch.uint8)
    if isinstance(mark, Image.Image):
        return pil_to_uint8(load_mark_image(mark, size))
    if isinstance(mark, np.ndarray):
        arr = mark if mark.ndim == 3 and mark.shape[-1] == 3 else np.moveaxis(mark, 0, -1) if mark.ndim == 3 else mark
        return pil_to_uint8(load_mark_image(Image.fromarray(np.asarray(arr, dtype=np.uint8)), size))
    return pil_to_uint8(load_mark(mark, size))


def augmentation_views(mark, mode: str = "strong", n: int = 8, seed: int = 0, size: int = 112,
                       extra=(), text_bank=None, scales=None):
    """``n`` augmented views of one mark, uint8 (n, 3, size, size), the same for the same ``seed``.

    ``mode``: ``"weak"``, ``"strong"``, ``"pseudo-logo"`` or ``"test-time"`` (the test-time zoom-out,
    at ``scales``: default ``n`` scales from 1.0 down to 0.6, 0.9 among them). The global random
    state (``random``, ``torch``) is left as it was.
    """
    import random

    import torch
    from torchvision.transforms import v2

    from .augment import PseudoLogo, TextBank, inference_transform, strong_transform, weak_transform

    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(AUGMENT_MODES)}")
    img = _as_uint8_mark(mark, size)
    if mode == "test-time":
        scales = list(scales) if scales is not None else _test_scales(n)
        return torch.stack([inference_transform(img[None], float(s))[0] for s in scales])
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    try:
        random.seed(seed)
        torch.manual_seed(seed)
        if mode == "weak":
            t = weak_transform(size, extra)
        elif mode == "strong":
            t = strong_transform(size, extra, text_bank or _default_bank())
        else:
            t = v2.Compose([PseudoLogo(text_bank or _default_bank()), v2.Resize((size, size), antialias=True)])
        return torch.stack([t(img) for _ in range(n)])
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


def _test_scales(n: int) -> list[float]:
    import numpy as np

    scales = [round(float(s), 2) for s in np.linspace(1.0, 0.6, max(2, n))]
    if 0.9 not in scales:
        scales[1] = 0.9
    return scales[:n]


_BANK = None


def _default_bank():
    """One TextBank for all explorers (rendering text lines takes a moment)."""
    global _BANK
    if _BANK is None:
        from .augment import TextBank

        _BANK = TextBank(n_lines=128, seed=0)
    return _BANK


def augmentation_figure(mark, mode: str = "strong", n: int = 8, seed: int = 0, size: int = 112, title: str = "",
                        extra=(), text_bank=None, per_row: int = 8):
    """The original mark (blue frame) and ``n`` views of it, as a matplotlib Figure (not shown by pyplot)."""
    from matplotlib.figure import Figure

    import matplotlib_fontja  # noqa: F401 - Japanese titles

    original = _as_uint8_mark(mark, size)
    views = augmentation_views(original, mode, n, seed, size, extra, text_bank)
    scales = _test_scales(n) if mode == "test-time" else None
    cols = min(n, per_row) + 1
    rows = -(-n // per_row)
    fig = Figure(figsize=(cols * 1.25, rows * 1.4 + 0.5))
    gs = fig.add_gridspec(rows, cols)
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(original.permute(1, 2, 0).numpy())
    ax.set_title("original 元画像", fontsize=8)
    _frame(ax, "#1f77b4", 2.5)
    for i, v in enumerate(views):
        ax = fig.add_subplot(gs[i // per_row, 1 + i % per_row])
        ax.imshow(v.permute(1, 2, 0).numpy())
        ax.set_title(f"scale {scales[i]:.2f}" if scales else f"view {i + 1}", fontsize=7,
                     color="#c62828" if scales and scales[i] == 0.9 else "black")
        _frame(ax, "#999999", 0.6)
    head = f"{title} · " if title else ""
    fig.suptitle(f"{head}{AUGMENT_MODES[mode]}" + ("" if mode == "test-time" else f" (seed {seed})"), fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.55 / fig.get_figheight(), wspace=0.08,
                        hspace=0.3)
    return fig


class AugmentExplorer:
    """Pick a mark, an augmentation mode and a seed; see the views the training would draw.

    Built by :func:`augment_explorer`. ``explorer.widget`` is the ipywidgets box (displaying the
    explorer shows it); ``explorer.redraw(mark=..., mode=..., seed=...)`` changes the controls,
    redraws and returns the matplotlib Figure, so a headless run or an HTML handout shows it too.
    The picture in the widget is a PNG (``explorer.image.value``), which needs no live kernel output.
    """

    def __init__(self, marks, titles=None, *, size: int = 112, n: int = 8, seed: int = 0, mode: str = "strong",
                 extra=(), text_bank=None):
        marks = list(marks)
        if not marks:
            raise ValueError("augment_explorer needs at least one mark")
        self.marks = marks
        self.titles = [str(t) for t in titles] if titles is not None else [f"mark {i}" for i in range(len(marks))]
        if len(self.titles) != len(marks):
            raise ValueError(f"{len(self.titles)} titles for {len(marks)} marks")
        self.size, self.n, self.extra = int(size), int(n), tuple(extra)
        self.bank = text_bank
        self.draws = 0  #: how many pictures were drawn (the tests watch it)
        self.last_figure = None
        self._busy = False
        self._build_widget(mode, seed)

    def _build_widget(self, mode: str, seed: int) -> None:
        import ipywidgets as widgets

        self.picker = widgets.Dropdown(options=[(t, i) for i, t in enumerate(self.titles)], value=0,
                                       description="mark", layout=widgets.Layout(width="300px"))
        self.mode = widgets.ToggleButtons(options=list(AUGMENT_MODES), value=mode, description="mode")
        self.seed = widgets.IntSlider(value=int(seed), min=0, max=99, description="seed",
                                      continuous_update=False)
        self.again = widgets.Button(description="new draw", icon="refresh", layout=widgets.Layout(width="110px"))
        self.image = widgets.Image(format="png")
        self.status = widgets.HTML()

        def changed(_=None):
            if not self._busy:
                self._draw_into_widget()

        for w in (self.picker, self.mode, self.seed):
            w.observe(changed, names="value")
        self.again.on_click(lambda _: setattr(self.seed, "value", (self.seed.value + 1) % 100))
        self.widget = widgets.VBox([widgets.HBox([self.picker, self.seed, self.again]), self.mode, self.image,
                                    self.status])
        self._draw_into_widget()

    def figure(self):
        """The current picture as a Figure (nothing is changed)."""
        i = int(self.picker.value)
        return augmentation_figure(self.marks[i], self.mode.value, self.n, int(self.seed.value), self.size,
                                   self.titles[i], self.extra, self.bank)

    def _draw_into_widget(self):
        import io

        try:
            fig = self.figure()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            self.image.value = buf.getvalue()
            self.status.value = ""
        except Exception as e:  # noqa: BLE001 - shown in the widget, not raised into the event loop
            self.status.value = f"<span style='color:#c62828'>{type(e).__name__}: {e}</span>"
            return None
        self.draws += 1
        self.last_figure = fig
        return fig

    def redraw(self, mark: int | None = None, mode: str | None = None, seed: int | None = None):
        """Set any of mark (row number), mode and seed, redraw, and return the Figure."""
        if mode is not None and mode not in AUGMENT_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(AUGMENT_MODES)}")
        self._busy = True  # one drawing for several changes
        try:
            if mark is not None:
                self.picker.value = int(mark) % len(self.marks)
            if mode is not None:
                self.mode.value = mode
            if seed is not None:
                self.seed.value = int(seed)
        finally:
            self._busy = False
        fig = self._draw_into_widget()
        if fig is None:
            raise RuntimeError(self.status.value)
        return fig

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def augment_explorer(marks, titles=None, *, size: int = 112, n: int = 8, seed: int = 0, mode: str = "strong",
                     extra=(), text_bank=None) -> AugmentExplorer:
    """An interactive view of the training augmentations of a chosen mark.

        from tmr_lib.widgets import augment_explorer
        explorer = augment_explorer(paths, titles, size=112)
        explorer                                   # the widget: mark, mode, seed, "new draw"
        explorer.redraw(mark=2, mode="pseudo-logo")  # the picture (works without a live widget too)

    ``marks``: image paths (read as every stage reads them: trimmed, padded), PIL images, arrays
    or uint8 tensors (3, S, S); ``titles``: one name per mark for the drop-down; ``n``: views per
    picture; ``extra``: the optional additions of ``Config.aug_extra`` ("rot90", "invert").
    """
    return AugmentExplorer(marks, titles, size=size, n=n, seed=seed, mode=mode, extra=extra, text_bank=text_bank)
