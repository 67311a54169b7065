"""Default tag vocabulary: prompts for open-vocabulary detection (CLIP picks the top-k per image).

Every tag appears once (a perception config also drops repeats of a vocabulary it is given).
"""

DEFAULT_VOCABULARY: tuple[str, ...] = (
    # furniture
    "chair", "armchair", "sofa", "table", "dining table", "coffee table", "desk", "bed", "bench", "stool",
    "shelf", "bookshelf", "cabinet", "wardrobe", "dresser", "drawer", "nightstand", "tv stand",
    # household
    "lamp", "floor lamp", "television", "monitor", "laptop", "keyboard", "computer mouse", "speaker",
    "telephone", "clock", "mirror", "picture frame", "painting", "vase", "plant", "potted plant", "flower",
    "pillow", "cushion", "blanket", "rug", "curtain", "book", "box", "basket", "bag", "backpack", "suitcase",
    "trash can", "bucket", "towel", "toy", "teddy bear", "candle", "fan", "heater",
    # kitchen and tableware
    "cup", "mug", "glass", "bottle", "wine glass", "bowl", "plate", "pot", "pan", "kettle", "teapot", "jar",
    "can", "fork", "knife", "spoon", "cutting board", "microwave", "oven", "refrigerator", "sink", "toaster",
    "coffee maker", "blender", "dish rack",
    # food
    "apple", "banana", "orange", "bread", "cake", "pizza", "sandwich", "carrot", "broccoli",
    # bathroom
    "toilet", "bathtub", "shower", "toothbrush", "soap dispenser",
    # office and tools
    "pen", "pencil", "scissors", "stapler", "printer", "calculator", "notebook", "folder", "hammer",
    "screwdriver", "wrench", "drill", "tape measure",
    # structure
    "door", "window", "stairs", "fireplace", "radiator", "column",
    # outdoor
    "car", "truck", "bus", "bicycle", "motorcycle", "scooter", "person", "dog", "cat", "bird", "horse",
    "tree", "bush", "traffic light", "stop sign", "street sign", "fire hydrant", "parking meter",
    "building", "fence", "mailbox", "umbrella", "trash bin", "pole", "cone", "ball", "skateboard",
)
