"""A hand-drawn 96x96 Helen label map: skin, both brows and eyes, nose and the three mouth classes."""
import torch


def face_labels(hh=96, ww=96):
    lab = torch.zeros(1, hh, ww, dtype=torch.long)
    lab[:, 10:90, 15:80] = 1  # skin
    lab[:, 30:34, 50:66] = 2  # subject's left brow (image right)
    lab[:, 38:44, 52:64] = 4  # subject's left eye
    lab[:, 30:34, 28:44] = 3
    lab[:, 38:44, 30:42] = 5
    lab[:, 45:60, 43:53] = 6  # nose
    lab[:, 66:70, 38:58] = 7
    lab[:, 70:73, 38:58] = 8
    lab[:, 73:77, 38:58] = 9
    return lab
