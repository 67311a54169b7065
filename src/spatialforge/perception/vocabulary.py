"""The tag vocabulary of tag-then-detect: the names CLIP ranks per photo to prompt a detector.

Only a prompted detector (``grounding-dino``, ``owlv2``) uses it: the CLIP tagger picks each photo's
``tags_per_image`` best-matching names (scored on the whole photo, see
:meth:`~spatialforge.perception.backends.clip.ClipFilter.tags`) and the detector looks for those.
The default detector, ``florence2-regions``, proposes regions without prompts and uses none.

:data:`DEFAULT_VOCABULARY` is the 1,203 LVIS v1 category names made readable
(:data:`~spatialforge.perception.lvis_vocabulary.LVIS_VOCABULARY`, CC BY 4.0 data; the attribution
and the changes are in that module), so the open world is covered by a large-vocabulary benchmark's
classes rather than a hand-picked indoor list. ``--vocabulary FILE`` (one name per line) or a
config's ``vocabulary`` list replaces it. Every name appears once (a perception config also drops
repeats of a vocabulary it is given).
"""

from spatialforge.perception.lvis_vocabulary import LVIS_VOCABULARY

__all__ = ["DEFAULT_VOCABULARY", "LVIS_VOCABULARY"]

DEFAULT_VOCABULARY: tuple[str, ...] = LVIS_VOCABULARY
