"""The app's gradio queue polls at QUEUE_POLL_S / PROGRESS_POLL_S when idle, on the gradio the app installs: should
an upgrade rename the queue's attributes, this fails instead of the app quietly waking a thousand times a second."""
import platform

from desktop.ui import server
from desktop.ui.lazy import load_gradio


def test_the_queue_of_the_page_polls_at_the_apps_pace():
    gr = load_gradio()
    with gr.Blocks() as demo:
        gr.Button("go")
    queue = server.quiet_queue(demo.queue())._queue
    assert queue.sleep_when_free == max(server.QUEUE_POLL_S, 0.05 if platform.system() == "Windows" else 0.0)
    assert queue.progress_update_sleep_when_free >= server.PROGRESS_POLL_S


def test_a_slower_pace_is_kept_and_a_queue_without_the_attributes_is_left_alone():
    class Queue:
        sleep_when_free, progress_update_sleep_when_free = 0.5, 0.001

    class Demo:
        _queue = Queue()

    demo = server.quiet_queue(Demo())
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.5, server.PROGRESS_POLL_S)
    assert server.quiet_queue(object()) is not None
