"""The format tags of the files the models layer writes: a checkpoint whose tag differs is refused with the
version that reads it (ghn_ext.core.checkpoints). Kept apart so that the catalogue of shipped GHNs
(ghn_ext.models.pretrained) checks a file's format without importing the GHN that reads it."""
GHN_FORMAT = "ghn_ext.ghn/1"
