"""Any image -> the network's 28x28 input: decoding to an array, the decision between a
Fashion-MNIST-like image, a drawing and a photo (preprocess.look_and_mask), a photo's segmentation
(segment.py) and a drawing's strokes (strokes.py)."""
