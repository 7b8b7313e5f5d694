"""Dataset readers: YOLO/darknet txt (yolo.py), COCO json (coco.py), Pascal VOC xml (voc.py),
and what they share (common.py: the label index, image discovery, box validation)."""
