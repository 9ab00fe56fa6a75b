"""The item embedding table with titles in it (``model.title_embeddings``).

``init``: the rows of movies with a title start as the titles' principal components (PCA of
the 384-d title vectors down to d_model), scaled to the spread of T4R's own initialisation
(normal, std 0.05), so the embeddings and the tied output layer start with similar titles
close together and training takes it from there.

``feature``: an item is ``id_embedding * trained + W @ title``, with W learned and the title
vector frozen. The same vectors embed the input and score the output (tied), so a movie
without training interactions is placed by its title alone, and W learns from every movie
that has both.
"""

from __future__ import annotations

import numpy as np
import torch

from t4r_app.data.title_vectors import TitleVectors

T4R_EMBEDDING_STD = 0.05  # transformers4rec TableConfig's default initializer: normal(0, 0.05)


def initialise_from_titles(weight: torch.Tensor, titles: TitleVectors) -> None:
    """Overwrite the rows of titled items with their titles' top principal components, scaled to T4R's spread."""
    rows = np.flatnonzero(titles.has_title)
    if len(rows) < 2:
        return
    vectors = titles.vectors[rows].astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    # d_model wider than the components (tiny catalogues, d_model > 384): the rest start at 0.
    projected = np.zeros((len(rows), weight.shape[1]))
    used = min(weight.shape[1], components.shape[0])
    projected[:, :used] = centred @ components[:used].T
    projected *= T4R_EMBEDDING_STD / max(projected[:, :used].std(), 1e-12)
    with torch.no_grad():
        weight[torch.as_tensor(rows)] = torch.as_tensor(projected, dtype=weight.dtype)


class TitledItemEmbedding(torch.nn.Embedding):
    """Id embedding (for trained items) plus a learned projection of the frozen title vector."""

    def __init__(self, table: torch.nn.Embedding, titles: TitleVectors, trained: np.ndarray):
        super().__init__(table.num_embeddings, table.embedding_dim, padding_idx=table.padding_idx)
        self.weight = table.weight  # the id table T4R built and initialised
        # Not saved in the weights: they come from item_features.npz, like the data they describe.
        self.register_buffer("titles", torch.as_tensor(titles.vectors), persistent=False)
        self.register_buffer("id_used", torch.as_tensor(trained, dtype=torch.float32).unsqueeze(1), persistent=False)
        self.register_buffer("baked_titles", None, persistent=False)
        self.title_projection = torch.nn.Linear(titles.dim, table.embedding_dim, bias=False)
        torch.nn.init.normal_(self.title_projection.weight, std=T4R_EMBEDDING_STD)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(item_ids) * self.id_used[item_ids] + self._title_part(item_ids)

    def vectors(self) -> torch.Tensor:
        """Every item's vector: what the tied output layer scores against."""
        return self.weight * self.id_used + self._title_part(None)

    def bake(self) -> None:
        """Keep only the projected titles (items x d_model), for serving: W and the 384-d vectors go."""
        with torch.no_grad():
            self.baked_titles = self.title_projection(self.titles).detach()
        self.titles = None
        self.title_projection = None

    def _title_part(self, item_ids: torch.Tensor | None) -> torch.Tensor:
        if self.baked_titles is not None:
            return self.baked_titles if item_ids is None else self.baked_titles[item_ids]
        titles = self.titles if item_ids is None else self.titles[item_ids]
        return self.title_projection(titles)


def item_vectors(table: torch.nn.Module) -> torch.Tensor:
    """The output layer's item matrix: the titled vectors where the table has them, else its weights."""
    return table.vectors() if isinstance(table, TitledItemEmbedding) else table.weight
