"""Rebuild the embedded demo dataset under ``tasks/demo/``: real, redistributable medical images (NEMA WG04 DICOM
samples from pydicom / pydicom-data, CC0 or no-known-restriction microscopy from scikit-image) in the original file
layouts of SLAKE, VQA-RAD, PathVQA and ROCOv2, with hand-written questions, answers and captions. A smoke-test set for
the harness, not a benchmark. Provenance and licences: ``tasks/demo/NOTICE.md``.

Run from the repository root::

    pip install pydicom==3.0.2 pydicom-data==1.0.0 scikit-image==0.26.0 pillow numpy
    python scripts/build_demo_data.py

The splits of each task share no (image, question) pair (ROCOv2: no image; PathVQA: no test question at all), and
``check_disjoint_splits`` refuses to write a set that breaks this. Everything is deterministic: the script deletes
and rewrites ``tasks/demo/{slake,vqa_rad,pathvqa,rocov2}/`` (it never touches ``NOTICE.md``) and prints a sha256 for
every file it wrote. JPEG bytes depend on Pillow's bundled libjpeg;
the committed files were made with Pillow 13.0.0 (libjpeg-turbo 3.2.0) and numpy 2.4.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pydicom
import skimage.data
from PIL import Image
from pydicom.data import get_testdata_file

OUT = Path(__file__).resolve().parents[1] / "tasks" / "demo"


# --- Images ----------------------------------------------------------------------------------------------------
def dicom_gray(name: str, crop=None, window=None, pct=(0.5, 99.5), gamma=1.0) -> Image.Image:
    """Rescale slope/intercept, then a (centre, width) or percentile window to 8 bits; MONOCHROME1 is inverted."""
    ds = pydicom.dcmread(get_testdata_file(name))
    a = ds.pixel_array.astype(np.float64)
    a = a * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    if crop is not None:  # (top, bottom, left, right) in source pixels
        a = a[crop[0] : crop[1], crop[2] : crop[3]]
    lo, hi = (window[0] - window[1] / 2, window[0] + window[1] / 2) if window else np.percentile(a, pct)
    g = np.clip((a - lo) / (hi - lo), 0.0, 1.0) ** gamma
    if ds.PhotometricInterpretation == "MONOCHROME1":
        g = 1.0 - g
    return Image.fromarray(np.round(g * 255).astype(np.uint8))


def dicom_rgb(name: str, box) -> Image.Image:
    """An RGB DICOM (uncompressed), cropped to ``box`` = (left, top, right, bottom)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    return Image.fromarray(ds.pixel_array.astype(np.uint8)).crop(box)


def skimage_file(name: str, box=None) -> Image.Image:
    img = Image.open(Path(skimage.data.__file__).parent / name)
    return img.crop(box) if box else img


def fit(img: Image.Image, max_side: int = 256) -> Image.Image:
    """Resize so that the longest side is ``max_side`` (up or down), keeping the aspect ratio."""
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


# key -> function returning the final RGB image. Crops of one source count as separate images.
IMAGES = {
    # NEMA WG04 RG1: CR chest PA, MONOCHROME1, 1955x1841.
    "chest_cr": lambda: fit(dicom_gray("RG1_UNCI.dcm")),
    # NEMA WG04 RG3: CR lower leg AP, "Non-ossifying fibroma of distal tibia", 1760x1760.
    "tibia_cr_distal": lambda: fit(dicom_gray("RG3_UNCI.dcm", crop=(640, 1760, 300, 1420))),
    # The tibial and fibular shafts above the distal crop: rows 0-640 (the two crops share no pixels).
    "tibia_cr_shaft": lambda: fit(dicom_gray("RG3_UNCI.dcm", crop=(0, 640, 380, 1380))),
    # NEMA WG04 MR2: shoulder, T1W spin echo, oblique coronal, 1024x1024.
    "shoulder_mr": lambda: fit(dicom_gray("MR2_UNCI.dcm")),
    # NEMA WG04 CT1 (downsized to 128x128 by pydicom): contrast CT, axial, thoracic vertebra and aorta. HU window.
    "thorax_ct": lambda: fit(dicom_gray("CT_small.dcm", window=(-50, 1700))),
    # NEMA WG04 MR1 (downsized to 64x64 by pydicom): axial T2 (TR 4000 / TE 240) MR. The file's own window.
    "head_mr": lambda: fit(dicom_gray("MR_small.dcm", window=(600, 1600))),
    # NEMA WG04 US1: power Doppler of a lymph node, two panels; crops leave out the burned-in text.
    "lymph_us_left": lambda: fit(dicom_rgb("US1_UNCR.dcm", (60, 110, 318, 330))),
    "lymph_us_right": lambda: fit(dicom_rgb("US1_UNCR.dcm", (318, 110, 576, 330))),
    # NEMA WG04 NM1 (edited by pydicom): whole-body bone scan, 1024x256; gamma 0.7 display.
    "bone_nm": lambda: fit(dicom_gray("JPEG2000_UNC.dcm", crop=(60, 900, 0, 256), window=(50, 100), gamma=0.7)),
    # scikit-image ihc.png (512x512): IHC (DAB, brown) with haematoxylin counterstain, colonic glands.
    "ihc_full": lambda: fit(skimage_file("ihc.png")),
    "ihc_topleft": lambda: skimage_file("ihc.png", (0, 0, 200, 200)),
    "ihc_botleft": lambda: skimage_file("ihc.png", (0, 300, 180, 480)),
    "ihc_topright": lambda: skimage_file("ihc.png", (280, 0, 480, 200)),
    "ihc_gland": lambda: skimage_file("ihc.png", (230, 290, 410, 470)),
    "ihc_stroma": lambda: skimage_file("ihc.png", (330, 200, 512, 380)),
    # scikit-image cell.png (550x660 grayscale): quantitative phase image of a single cell in saline.
    "cell_full": lambda: fit(skimage_file("cell.png")),
    "cell_crop": lambda: skimage_file("cell.png", (300, 250, 550, 500)),
}


@functools.cache
def jpeg_bytes(key: str) -> bytes:
    buf = io.BytesIO()
    IMAGES[key]().convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


# --- Annotations: '|'-separated tables, one row per line. Every answer was checked against its image. ----------
def table(text: str) -> list[list[str]]:
    return [line.split("|") for line in text.strip().splitlines()]


def pairs(text: str, sep: str | None = None) -> dict[str, str]:
    return dict(item.strip().split("=") for item in text.split(sep))


# SLAKE: imgs/xmlab<N>/source.jpg + {train,validate,test}.json.  img_id -> (image key, location, modality)
SLAKE_IMAGES = {
    0: ("chest_cr", "Chest", "X-Ray"),
    1: ("thorax_ct", "Chest", "CT"),
    2: ("shoulder_mr", "Shoulder", "MRI"),
    3: ("head_mr", "Head", "MRI"),
    4: ("tibia_cr_distal", "Leg", "X-Ray"),
}
# split | img_id | q_lang | question | answer | answer_type | content_type
SLAKE = table("""
train|0|en|What is the main organ in this image?|Lung|OPEN|Organ
train|0|en|Which part of the body does this image belong to?|Chest|OPEN|Position
train|0|en|Is this image abnormal?|Yes|CLOSED|Abnormality
train|0|en|How many lungs are shown in this image?|2|OPEN|Quantity
train|0|en|What is the shape of the lesions in the lungs?|Round|OPEN|Shape
train|1|en|What modality is used to take this image?|CT|OPEN|Modality
train|1|en|Was a contrast agent used for this scan?|Yes|CLOSED|Modality
train|1|en|Does the picture contain lung?|Yes|CLOSED|Organ
train|1|en|Which side of the body is the aorta on?|Left|OPEN|Position
train|1|en|What bone is shown in the center of the image?|Vertebra|OPEN|Organ
train|2|en|What is the weighting of this MRI?|T1|OPEN|Modality
train|2|en|Which joint is shown in this image?|Shoulder|OPEN|Position
train|2|en|What is the scanning plane of this image?|Coronal Plane|OPEN|Plane
train|2|en|Is this a CT or an MRI?|MRI|CLOSED|Modality
train|2|en|Does the picture contain humerus?|Yes|CLOSED|Organ
train|3|en|What modality is used to take this image?|MRI|OPEN|Modality
train|3|en|Is this a T1 weighted image?|No|CLOSED|Modality
train|3|en|What is the scanning plane of this image?|Transverse Plane|OPEN|Plane
train|4|en|Is this an MRI?|No|CLOSED|Modality
train|4|en|Which bone contains the lesion?|Tibia|OPEN|Abnormality
train|4|en|Is this image abnormal?|Yes|CLOSED|Abnormality
train|4|en|Where is the lesion located in the tibia?|Distal|OPEN|Position
train|4|en|Does the picture contain fibula?|Yes|CLOSED|Organ
train|4|en|Does the picture contain heart?|No|CLOSED|Organ
train|4|en|Which part of the body does this image belong to?|Leg|OPEN|Position
train|0|zh|这张图片是用什么模态拍摄的？|X光|OPEN|Modality
train|1|zh|这张图片属于身体的哪个部位？|胸部|OPEN|Position
train|3|zh|这是CT还是核磁共振？|核磁共振|CLOSED|Modality
train|4|zh|这张图片异常吗？|是|CLOSED|Abnormality
validate|0|en|What is the scanning plane of this image?|Coronal Plane|OPEN|Plane
validate|1|en|Which part of the body does this image belong to?|Chest|OPEN|Position
validate|2|en|Is this a T1 weighted image?|Yes|CLOSED|Modality
validate|3|en|Is this an MRI?|Yes|CLOSED|Modality
validate|4|en|Which leg is shown in this image?|Right|OPEN|Position
test|0|en|What modality is used to take this image?|X-Ray|OPEN|Modality
test|0|en|Are there nodules in the lungs?|Yes|CLOSED|Abnormality
test|0|en|Is this image normal?|No|CLOSED|Abnormality
test|0|en|Where are the lesions located?|Both lungs|OPEN|Position
test|0|en|Does the picture contain heart?|Yes|CLOSED|Organ
test|1|en|Is this a CT or an MRI?|CT|CLOSED|Modality
test|1|en|What is the scanning plane of this image?|Transverse Plane|OPEN|Plane
test|1|en|Is the aorta on the left or right side of the body?|Left|CLOSED|Position
test|2|en|What modality is used to take this image?|MRI|OPEN|Modality
test|2|en|Is this a T2 weighted image?|No|CLOSED|Modality
test|2|en|Which part of the body does this image belong to?|Shoulder|OPEN|Position
test|3|en|Is this a T2 weighted image?|Yes|CLOSED|Modality
test|3|en|Is this a CT or an MRI?|MRI|CLOSED|Modality
test|4|en|What modality is used to take this image?|X-Ray|OPEN|Modality
test|4|en|Is there a lesion in the tibia?|Yes|CLOSED|Abnormality
test|4|en|Is the fibula abnormal?|No|CLOSED|Abnormality
test|1|zh|这张图片是用什么模态拍摄的？|CT|OPEN|Modality
test|2|zh|这是CT还是核磁共振？|核磁共振|CLOSED|Modality
test|0|zh|这张图片异常吗？|是|CLOSED|Abnormality
test|4|zh|病变位于哪块骨头？|胫骨|OPEN|Abnormality
""")

# VQA-RAD: "VQA_RAD Dataset Public.json" + "VQA_RAD Image Folder/synpicNNNNN.jpg".  image -> (image key, organ)
VQARAD_IMAGES = {
    "synpic90001.jpg": ("chest_cr", "CHEST"),
    "synpic90002.jpg": ("thorax_ct", "CHEST"),
    "synpic90003.jpg": ("head_mr", "HEAD"),
}
# phrase_type | image | question | answer | answer_type | question_type.  A *para row paraphrases the row above it
# and shares its qid_linked_id; that row's question_rephrase holds the paraphrase.
VQARAD = table("""
freeform|synpic90001.jpg|Is this a PA film?|Yes|CLOSED|PLANE
freeform|synpic90001.jpg|What kind of image is this?|X-ray|OPEN|MODALITY
para|synpic90001.jpg|What type of imaging is this?|X-ray|OPEN|MODALITY
freeform|synpic90001.jpg|Is there evidence of lung nodules?|Yes|CLOSED|PRES
para|synpic90001.jpg|Are there nodules in the lungs?|Yes|CLOSED|PRES
freeform|synpic90001.jpg|Are the lesions in one or both lungs?|Both|CLOSED|POS
freeform|synpic90001.jpg|What is the shape of the lung lesions?|Round|OPEN|ATTRIB
freeform|synpic90001.jpg|Are there multiple lesions?|Yes|CLOSED|COUNT
freeform|synpic90001.jpg|Which organ is abnormal?|Lungs|OPEN|ORGAN
freeform|synpic90001.jpg|Is this image abnormal?|Yes|CLOSED|ABN
freeform|synpic90002.jpg|What kind of image is this?|CT|OPEN|MODALITY
freeform|synpic90002.jpg|What imaging plane is depicted?|Axial|OPEN|PLANE
para|synpic90002.jpg|Which plane is this image in?|Axial|OPEN|PLANE
freeform|synpic90002.jpg|Was IV contrast given?|Yes|CLOSED|MODALITY
freeform|synpic90002.jpg|Is the aorta on the left or right?|Left|CLOSED|POS
freeform|synpic90002.jpg|What bone is in the center of the image?|Vertebra|OPEN|ORGAN
freeform|synpic90002.jpg|Are the lungs visible in this image?|Yes|CLOSED|PRES
freeform|synpic90002.jpg|Is this an MRI?|No|CLOSED|MODALITY
freeform|synpic90003.jpg|What kind of image is this?|MRI|OPEN|MODALITY
freeform|synpic90003.jpg|Is this a T2-weighted image?|Yes|CLOSED|MODALITY
para|synpic90003.jpg|Is this image T2 weighted?|Yes|CLOSED|MODALITY
freeform|synpic90003.jpg|Is this a CT scan?|No|CLOSED|MODALITY
freeform|synpic90003.jpg|In what plane is this image taken?|Axial|OPEN|PLANE
freeform|synpic90003.jpg|Does fluid appear bright on this image?|Yes|CLOSED|ATTRIB
test_freeform|synpic90001.jpg|What imaging modality was used?|X-ray|OPEN|MODALITY
test_freeform|synpic90001.jpg|Is this image normal?|No|CLOSED|ABN
test_freeform|synpic90001.jpg|Are the lung lesions round?|Yes|CLOSED|ATTRIB
test_freeform|synpic90001.jpg|Are there multiple lung masses?|Yes|CLOSED|COUNT
test_para|synpic90001.jpg|Is there more than one lung lesion?|Yes|CLOSED|COUNT
test_freeform|synpic90002.jpg|What imaging modality was used?|CT|OPEN|MODALITY
test_freeform|synpic90002.jpg|Is the descending aorta on the left or right side of the patient?|Left|CLOSED|POS
test_freeform|synpic90002.jpg|Is there contrast in the aorta?|Yes|CLOSED|MODALITY
test_freeform|synpic90002.jpg|In what plane is this image taken?|Axial|OPEN|PLANE
test_freeform|synpic90002.jpg|Is this a plain radiograph?|No|CLOSED|MODALITY
test_freeform|synpic90003.jpg|What imaging modality was used?|MRI|OPEN|MODALITY
test_freeform|synpic90003.jpg|Is this a T1-weighted image?|No|CLOSED|MODALITY
test_para|synpic90003.jpg|Is this image T1 weighted?|No|CLOSED|MODALITY
test_freeform|synpic90003.jpg|Is fluid bright or dark on this image?|Bright|CLOSED|ATTRIB
test_freeform|synpic90003.jpg|What is the weighting of this MRI?|T2|OPEN|MODALITY
""")

# PathVQA: images/{train,val,test}/<name>.jpg + qas/{split}/{split}_qa.pkl.  name -> image key
PATHVQA_IMAGES = pairs(
    """train_0001=ihc_full train_0002=cell_full train_0003=ihc_topleft train_0004=ihc_botleft \
val_0001=ihc_topright test_0001=ihc_gland test_0002=cell_crop test_0003=ihc_stroma"""
)
# image | question | answer   (the split is the image name's prefix)
PATHVQA = table("""
train_0001|Which chromogen gives the brown color?|dab
train_0001|Are several glands present?|yes
train_0001|Is the brown staining membranous?|yes
train_0001|Is this colonic mucosa?|yes
train_0001|What tissue lies between the glands?|stroma
train_0001|Is the staining confined to the nuclei?|no
train_0001|Is this an immunohistochemical stain?|yes
train_0002|Is this a single cell?|yes
train_0002|What is the cell suspended in?|saline
train_0002|Is this a quantitative phase image?|yes
train_0002|Are there many cells?|no
train_0002|Is the cell stained brown?|no
train_0003|What type of epithelium is shown?|columnar
train_0003|Are the cell membranes stained?|yes
train_0003|What color is the epithelium?|brown
train_0004|Are the nuclei elongated?|yes
train_0004|Which stain colors the nuclei blue?|hematoxylin
train_0004|Is this tissue from the colon?|yes
train_0004|Is a lumen visible?|yes
val_0001|Is a gland lumen visible?|yes
val_0001|Is this tissue stained with dab?|yes
val_0001|Are the nuclei blue?|yes
val_0001|Is there stroma at the edge of the image?|yes
val_0001|What type of epithelium lines the gland?|columnar
test_0001|What type of staining is shown?|immunohistochemistry
test_0001|What color is the positive staining?|brown
test_0001|Is this hematoxylin and eosin staining?|no
test_0001|Is a gland shown?|yes
test_0001|What organ is this tissue from?|colon
test_0002|How many cells are shown?|one
test_0002|Is the cell round?|yes
test_0002|Is this a stained tissue section?|no
test_0002|What is the shape of the cell?|round
test_0003|Is the stroma stained brown?|no
test_0003|What color are the nuclei?|blue
test_0003|What is the counterstain?|hematoxylin
test_0003|Is there brown staining?|yes
test_0003|What is the shape of the stromal nuclei?|spindle
""")

# ROCOv2: {split}/<ID>.jpg, {split}_{captions,concepts}.csv, cui_mapping.csv. UMLS CUI -> canonical name:
CUI_NAMES = pairs(
    """C1306645=Plain x-ray;C0040405=X-Ray Computed Tomography;C0024485=Magnetic Resonance Imaging;\
C0041618=Ultrasonography;C0817096=Chest;C0024109=Lung;C0028259=Nodule;C0023216=Lower Extremity;C0040184=Tibia;\
C1140618=Upper Extremity;C0037004=Shoulder;C0020164=Humerus;C0037949=Vertebral column;C0003483=Aorta;C0018670=Head;\
C0024204=Lymph node;C0262950=Skeletal bone;C0005682=Urinary Bladder""",
    sep=";",
)
# split | image key | CUIs | caption.   IDs are ROCOv2_2023_<split>_<n:06d> in row order.
ROCO = table("""
train|head_mr|C0024485;C0018670|Axial T2-weighted MR image of the head.
train|tibia_cr_shaft|C1306645;C0023216;C0040184|Anteroposterior radiograph of the right lower leg showing the tibial \
and fibular shafts.
valid|lymph_us_left|C0041618;C0024204|Power Doppler sonography of a lymph node demonstrating vascular flow.
test|chest_cr|C1306645;C0817096;C0024109;C0028259|Chest X-ray (PA view) showing multiple round nodules in both lungs.
test|tibia_cr_distal|C1306645;C0023216;C0040184|Radiograph of the distal tibia with a lucent non-ossifying fibroma.
test|shoulder_mr|C0024485;C1140618;C0037004;C0020164|Coronal T1-weighted MRI of the shoulder.
test|thorax_ct|C0040405;C0817096;C0037949;C0003483|Axial contrast CT of the chest showing the thoracic spine and aorta.
test|lymph_us_right|C0041618;C0024204|Ultrasound with power Doppler of a lymph node.
test|bone_nm|C0262950;C0005682|Whole-body bone scan.
""")


# --- Writers ---------------------------------------------------------------------------------------------------
WRITTEN: list[Path] = []


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    WRITTEN.append(path)


def to_json(records: list) -> str:
    return json.dumps(records, ensure_ascii=False, indent=1) + "\n"


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def build_slake(root: Path) -> None:
    for img_id, (key, _, _) in SLAKE_IMAGES.items():
        write(root / "imgs" / f"xmlab{img_id}" / "source.jpg", jpeg_bytes(key))
    splits: dict[str, list[dict]] = {}
    for qid, (split, img, lang, question, answer, answer_type, content_type) in enumerate(SLAKE, start=1):
        _, location, modality = SLAKE_IMAGES[int(img)]
        record = dict(img_id=int(img), img_name=f"xmlab{img}/source.jpg", question=question, answer=answer)
        record.update(q_lang=lang, location=location, modality=modality, answer_type=answer_type, base_type="vqa")
        record.update(content_type=content_type, triple=["vhead", "_", "_"], qid=qid)
        splits.setdefault(split, []).append(record)
    for split, records in splits.items():
        write(root / f"{split}.json", to_json(records))


def build_vqa_rad(root: Path) -> None:
    for name, (key, _) in VQARAD_IMAGES.items():
        write(root / "VQA_RAD Image Folder" / name, jpeg_bytes(key))
    records: list[dict] = []
    for qid, (phrase_type, image, question, answer, answer_type, question_type) in enumerate(VQARAD, start=1):
        if phrase_type.endswith("para"):  # link to the freeform question it paraphrases (the row above)
            link, records[-1]["question_rephrase"] = records[-1]["qid_linked_id"], question
        else:
            link = f"demo-{qid:04d}"
        record = dict(qid=qid, phrase_type=phrase_type, qid_linked_id=link, image_case_url="", image_name=image)
        record.update(image_organ=VQARAD_IMAGES[image][1], evaluation="given", question=question)
        record.update(question_rephrase="NULL", question_relation="NULL", question_frame="NULL")
        record.update(question_type=question_type, answer=answer, answer_type=answer_type)
        records.append(record)
    write(root / "VQA_RAD Dataset Public.json", to_json(records))


def build_pathvqa(root: Path) -> None:
    for name, key in PATHVQA_IMAGES.items():
        write(root / "images" / name.split("_")[0] / f"{name}.jpg", jpeg_bytes(key))
    for split in ("train", "val", "test"):
        records = [{"image": i, "question": q, "answer": a} for i, q, a in PATHVQA if i.startswith(split + "_")]
        write(root / "qas" / split / f"{split}_qa.pkl", pickle.dumps(records, protocol=4))


def build_rocov2(root: Path) -> None:
    used: set[str] = set()
    for split in ("train", "valid", "test"):
        mine = [row for row in ROCO if row[0] == split]
        rows = [(f"ROCOv2_2023_{split}_{n:06d}", *r[1:]) for n, r in enumerate(mine, start=1)]
        for rid, key, cuis, _ in rows:
            write(root / split / f"{rid}.jpg", jpeg_bytes(key))
            used.update(cuis.split(";"))
        write(root / f"{split}_captions.csv", to_csv(["ID", "Caption"], [[r[0], r[3]] for r in rows]))
        write(root / f"{split}_concepts.csv", to_csv(["ID", "CUIs"], [[r[0], r[2]] for r in rows]))
    assert used <= set(CUI_NAMES), f"CUIs without a name: {used - set(CUI_NAMES)}"
    write(root / "cui_mapping.csv", to_csv(["CUI", "Canonical name"], [[c, CUI_NAMES[c]] for c in sorted(used)]))


# --- Split hygiene -----------------------------------------------------------------------------------------------
def question_key(question: str) -> str:
    """Questions compared as the blind ``prior`` baseline compares them: lowercase words, no articles/punctuation."""
    words = "".join(c if c.isalnum() else " " for c in question.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def check_disjoint_splits() -> None:
    """No (image, question) pair in two splits of a task (ROCOv2: no image in two splits), so neither a model
    trained on the demo train split nor the question-only ``prior`` baseline sees a test item in training.
    PathVQA's images are all crops of two pictures, so there no test question may occur in train/val at all.
    tests/tasks/test_demo_data.py checks the same on the written files."""
    items: dict[str, list[tuple[str, str, str]]] = {
        "slake": [(r[0], SLAKE_IMAGES[int(r[1])][0], r[3]) for r in SLAKE if r[2] == "en"],
        "vqa_rad": [("test" if r[0].startswith("test") else "train", VQARAD_IMAGES[r[1]][0], r[2]) for r in VQARAD],
        "pathvqa": [(r[0].split("_")[0], PATHVQA_IMAGES[r[0]], r[1]) for r in PATHVQA],
        "rocov2": [(r[0], r[1], "") for r in ROCO],
    }
    for task, rows in items.items():
        by_split: dict[str, set[tuple[str, str]]] = {}
        for split, image, question in rows:
            by_split.setdefault(split, set()).add((image, question_key(question)))
        splits = sorted(by_split)
        for i, a in enumerate(splits):
            for b in splits[i + 1 :]:
                shared = by_split[a] & by_split[b]
                assert not shared, f"{task}: {a} and {b} share (image, question) {sorted(shared)}"
    test_questions = {question_key(q) for i, q, _ in PATHVQA if i.startswith("test_")}
    seen = sorted(test_questions & {question_key(q) for i, q, _ in PATHVQA if not i.startswith("test_")})
    assert not seen, f"pathvqa: test questions also asked in train/val: {seen}"


def main() -> None:
    check_disjoint_splits()
    builders = {"slake": build_slake, "vqa_rad": build_vqa_rad, "pathvqa": build_pathvqa, "rocov2": build_rocov2}
    for task, build in builders.items():
        shutil.rmtree(OUT / task, ignore_errors=True)
        build(OUT / task)
    for path in sorted(WRITTEN):
        print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(OUT.parents[1])}")
    print(f"{len(WRITTEN)} files, {sum(p.stat().st_size for p in WRITTEN) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
