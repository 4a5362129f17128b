"""The names a job's files and inputs get on the page, in process: a new look's downloads named after the model and
the look (not every one "model_s…"), "Use these settings" handing a job's images back under the names they were
given (not input.png), and a job folder said in words (not its folder's id)."""
import time

from PIL import Image

from desktop.ui.history_list import job_words
from desktop.ui.names import download_stem, input_copies


def test_a_new_look_is_named_after_its_model_and_its_look():
    look = {"kind": "variant", "seed": 7}
    assert download_stem({**look, "mesh": "/up/chair.glb", "prompt": "made of polished gold"}) == \
        "chair-made-of-polished-gold_s7"
    # an app-made model.glb given two looks: two names, neither "model_s7"
    assert download_stem({**look, "mesh": "/up/model.glb", "prompt": "made of polished gold"}) == \
        "made-of-polished-gold_s7"
    assert download_stem({**look, "mesh": "<model.glb: 9 bytes>", "inputs": ["/up/brass.png"]}) == "brass_s7"
    # whole words, as many as fit in a name that stays readable
    long = download_stem({**look, "mesh": "/up/chair.glb", "prompt": "made of polished gold with brass studs and a "
                                                                     "carved oak back"})
    assert long == "chair-made-of-polished-gold-with-brass_s7"
    assert download_stem({**look, "mesh": "/up/model.glb", "inputs": ["/f/input.png"]}) == "model_s7"
    assert download_stem({"kind": "generate", "inputs": ["/up/chair.png"], "seed": 7}) == "chair_s7"


def test_use_these_settings_hands_the_images_back_under_their_names(tmp_path):
    folder = tmp_path / "20261127-090751-282b9b10"
    folder.mkdir()
    copies = []
    for i, colour in enumerate(("red", "blue", "green")):
        copies.append(folder / ("input.png" if i == 0 else f"input_{i + 1}.png"))
        Image.new("RGB", (8, 8), colour).save(copies[-1])
    given = ["/tmp/gradio/ab/chair.png", "<chair back.png: 120 bytes>", "/tmp/gradio/cd/chair.png"]
    back = input_copies(copies, given, tmp_path / "inputs")
    assert [p.rsplit("/", 1)[-1] for p in back[:2]] == ["chair.png", "chair-back.png"]
    assert back[2] == str(copies[2])                      # a second "chair.png" keeps the folder's copy
    assert [Image.open(p).getpixel((0, 0)) for p in back] == [(255, 0, 0), (0, 0, 255), (0, 128, 0)]
    assert input_copies(copies[:1], [], tmp_path / "inputs") == [str(copies[0])]     # no name known


def test_a_job_folder_is_said_in_words():
    when = time.strftime("%m-%d %H:%M", time.strptime("20261127-0907", "%Y%m%d-%H%M"))
    record = {"inputs": ["/tmp/gradio/ab/chair.png"]}
    assert job_words("/out/20261127-090751-282b9b10", record) == f"chair.png of {when}"
    export = {**record, "kind": "export", "settings": {"destination": "print"}}
    assert job_words("/out/20261127-090751-282b9b10", export) == f"chair.png (export · 3D print) of {when}"
    assert job_words("/out/odd-folder", {"prompt": "a red chair"}) == '"a red chair"'
