"""How the page looks and answers the keyboard: its theme (text contrast of at least 4.5:1 in light and dark),
its CSS (the two columns stacked on narrow windows, visible focus, errors as headline + action + details) and
its script (Ctrl+Enter generates, the status announced to screen readers and brought into view after an action,
the errors' buttons, a notice when the server stopped, its controls then disabled). server.py hands them to Gradio's
launch()."""
from .lazy import gr


def page_theme():
    """Gradio's default theme in green, with the colours that were too faint for WCAG AA made darker."""
    return gr.themes.Default(primary_hue="green").set(
        # helper lines (info=) and other subdued text: #bbbbc2 on white was 1.9:1
        block_info_text_color="*neutral_600", block_info_text_color_dark="*neutral_300",
        body_text_color_subdued="*neutral_600", body_text_color_subdued_dark="*neutral_400",
        # white on green-500 was 2.3:1
        button_primary_background_fill="*primary_700", button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover="*primary_800", button_primary_background_fill_hover_dark="*primary_800",
        button_primary_text_color="white", button_primary_text_color_dark="white",
        error_text_color="#b91c1c", error_text_color_dark="#fca5a5",
        # links on dark blocks (files, batch rows): blue-500 on #27272a was 4.0:1
        link_text_color_dark="*secondary_400", link_text_color_hover_dark="*secondary_300",
        link_text_color_visited_dark="*secondary_400", link_text_color_active_dark="*secondary_300",
    )


CSS = """
#td-header h1 {font-size: 1.6em; margin: 0 0 0.2em;}
/* the Output settings' sub-headings: h2s under the page's h1 (heading order), at the size of Gradio's h4 */
#td-out-settings .td-subheading h2 {font-size: 1.1em;}
/* two columns side by side only where both have room */
@media (max-width: 900px) {
  #td-main {flex-direction: column;}
  #td-main > .column {width: 100%; min-width: 100% !important;}
}
/* the selected tab's name: green-500 was 2.3:1 on white */
#td-tabs button[role=tab].selected {color: var(--td-accent-text);}
.gradio-container {--td-accent-text: #15803d; --td-error: #b91c1c; --td-focus: #15803d;}
.dark .gradio-container, .gradio-container.dark, .dark {--td-accent-text: #4ade80; --td-error: #fca5a5;
                                                        --td-focus: #4ade80;}
/* keyboard focus that shows, radios and checkboxes included */
.gradio-container label:has(input:focus-visible) {outline: 3px solid var(--td-focus); outline-offset: 2px;}
.gradio-container button:focus-visible, .gradio-container summary:focus-visible,
.gradio-container textarea:focus-visible, .gradio-container input:focus-visible {
  outline: 3px solid var(--td-focus); outline-offset: 2px;}
/* errors: a headline, the action (a button), the raw text folded */
#td-status .td-failed, #td-status .td-error {color: var(--body-text-color); font-weight: normal;}
#td-status .td-headline {color: var(--td-error); font-weight: 600; margin: 0;}
#td-status .td-fix {margin: 6px 0 0;}
#td-status .td-action {margin-left: 8px; padding: 2px 10px; border-radius: 6px; cursor: pointer;
                       border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill);
                       color: var(--button-secondary-text-color); font-weight: 600;}
#td-status .td-details {margin-top: 6px; font-size: 0.9em;}
#td-status .td-details pre {white-space: pre-wrap; overflow-wrap: anywhere; max-height: 12em; overflow: auto;
                            margin: 4px 0 0; font-size: 0.95em;}
#td-status .td-kept {margin: 6px 0 0;}
/* a destination's limits: a green badge when met, a red one listing each limit missed with its numbers */
#td-status .td-limits {margin: 6px 0 0; padding: 4px 10px; border-radius: 6px; font-weight: 600;
                       display: inline-block;}
#td-status .td-limits ul {margin: 4px 0 0; padding-left: 1.2em; font-weight: normal;}
#td-status .td-limits-met {background: #dcfce7; color: #14532d;}
#td-status .td-limits-missed {background: #fee2e2; color: #7f1d1d;}
.td-jobs tr[data-state=failed] td {color: var(--td-error);}
/* a long choice (a job in the history's search box, a pipeline type) ends in "…" before its chevron (drawn over
   the box's right end) */
#td-history input[role=combobox], #td-pipeline_type input[role=combobox] {padding-right: calc(var(--size-5) * 2);
                                                                         text-overflow: ellipsis;}
/* a dropped image on a checkerboard: its transparent parts show as such, a see-through one is not a blank box */
#td-single img {background: repeating-conic-gradient(#d4d4d8 0 25%, #fafafa 0 50%) 50% / 16px 16px;}
/* what screen readers hear: the status box's state changes (look.py's script fills it) */
.td-sr-only {position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
             clip: rect(0, 0, 0, 0); white-space: nowrap; border: 0;}
#td-status .td-stopped {border-color: var(--td-error);}
/* in the flow above the page (the title moves down under it, never behind it), and kept in view when scrolled */
#td-offline {position: sticky; top: 0; z-index: 1000; padding: 10px 16px; text-align: center;
             background: #7f1d1d; color: #fff; font-weight: 600;}
"""

# Run once in the page's <head>: everything waits for Gradio's elements through events, never for a load order.
SCRIPT = r"""
(() => {
  const $ = (s) => document.querySelector(s);
  const click = (el) => { if (el && !el.disabled) { el.click(); return true; } return false; };
  // Ctrl+Enter (Cmd+Enter) generates, from anywhere on the page, the prompt box too.
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      e.preventDefault();
      e.stopPropagation();
      click($('#td-generate'));
    }
  }, true);

  // A control inside a closed accordion is opened first, so that the user sees what changed.
  const reveal = (selector, accordion) => new Promise((done) => {
    const el = $(selector);
    if (el && el.offsetParent !== null) return done(el);
    click($(`#${accordion} .label-wrap`));
    let tries = 0;
    const wait = () => {
      const now = $(selector);
      if ((now && now.offsetParent !== null) || tries++ > 40) return done(now);
      setTimeout(wait, 50);
    };
    wait();
  });
  const said = (button, text) => {
    const line = document.createElement('span');
    line.className = 'td-done-action';
    line.textContent = ' ' + text;
    button.replaceWith(line);
  };
  const actions = {
    'no-background': async (button) => {
      const box = await reveal('#td-preprocess input[type=checkbox]', 'td-mem-settings');
      if (box && box.checked) box.click();
      if (box) box.scrollIntoView({block: 'center'});
      said(button, 'Remove background is now off: press Generate (Ctrl+Enter).');
    },
    'new-seed': async (button) => {
      const box = await reveal('#td-randomize input[type=checkbox]', 'td-gen-settings');
      if (box && !box.checked) box.click();
      setTimeout(() => click($('#td-generate')), 100);
    },
    'retry': async () => click($('#td-generate')),
  };
  document.addEventListener('click', (e) => {
    const button = e.target.closest('[data-td-action]');
    if (!button) return;
    const name = button.dataset.tdAction;
    if (name.startsWith('preset:')) {
      const radio = $(`#td-preset input[value="${name.slice(7)}"]`);
      if (radio) { radio.click(); radio.focus(); }
      const label = radio && radio.closest('label');
      said(button, `${label ? label.innerText.trim() : 'That'} preset picked: press Generate (Ctrl+Enter).`);
    } else if (actions[name]) {
      actions[name](button);
    }
  });

  // The status box's state changes, said to screen readers (each progress step would be too chatty).
  let live = null, lastState = null, lastText = null;
  const announce = () => {
    const box = $('#td-status [data-state]');
    if (!box) return;
    if (!live) {
      live = document.createElement('div');
      live.id = 'td-live';
      live.className = 'td-sr-only';
      live.setAttribute('role', 'status');
      live.setAttribute('aria-live', 'polite');
      document.body.appendChild(live);
    }
    const state = box.dataset.state;
    const first = box.querySelector('.td-headline, .td-line') || box;
    const text = first.innerText.trim();
    if (state !== lastState || (state !== 'running' && text !== lastText)) {
      lastState = state;
      lastText = text;
      live.textContent = text;
    }
  };
  // ARIA slips of Gradio's own widgets (axe-core): an empty box labelled without a role; an upload button or a
  // gallery thumbnail whose label hides its visible text (its caption); the file list's "add more" icon button
  // wrapping the real upload button (a button in a button: the outer one becomes a labelled group out of the tab
  // order); the 3D viewer's canvas at tabindex 1 (Babylon.js's default), ahead of the page's own order.
  const mend = () => {
    document.querySelectorAll('.empty[aria-label]:not([role])').forEach((el) => el.setAttribute('role', 'img'));
    const labelled = 'button.upload-container[aria-label], button.thumbnail-item[aria-label]';
    document.querySelectorAll(labelled).forEach((el) => {
      if (el.innerText.trim() && !el.closest('button.icon-button')) el.removeAttribute('aria-label');
    });
    document.querySelectorAll('button.icon-button:not([role])').forEach((el) => {
      const inner = 'button, input:not([type=file]), a[href], [tabindex]:not([tabindex="-1"])';
      if (!el.querySelector(inner)) return;
      el.setAttribute('role', 'group');
      el.setAttribute('tabindex', '-1');
      el.setAttribute('aria-label', 'Add more files');
      el.removeAttribute('title');
    });
    document.querySelectorAll('canvas[tabindex]').forEach((el) => {
      if (el.tabIndex > 0) el.setAttribute('tabindex', '0');
    });
  };
  // tabindex too: Babylon.js sets the canvas's after adding it
  // Feedback in view: a status the user's own action (a drop, a click, a key) brought within a few seconds is
  // scrolled into view when it is out of it (on a narrow window the status sits below every setting).
  let acted = 0, seenState = null, seenText = null;
  const RESULT_STATES = ['done', 'partial', 'history'];
  ['pointerdown', 'keydown', 'change', 'drop', 'paste'].forEach((type) =>
    document.addEventListener(type, () => { acted = Date.now(); }, true));
  const follow = () => {
    const box = $('#td-status [data-state]');
    if (!box) return;
    const first = box.querySelector('.td-headline, .td-line') || box;
    const state = box.dataset.state, text = first.innerText.trim();
    if (state === seenState && text === seenText) return;
    const moved = state !== seenState;
    seenState = state;
    seenText = text;
    // a progress tick never moves the page, nor a job that ends long after its Generate
    if ((state === 'running' && !moved) || state === 'idle' || Date.now() - acted > 30000) return;
    const line = first.getBoundingClientRect(), view = window.innerHeight;
    if (line.height === 0 || (line.top >= 0 && line.bottom <= view)) return;
    const whole = box.getBoundingClientRect();
    // the smallest move that shows the box (its headline where the box is taller than the window): never past it
    const shown = whole.height <= view ? whole : line;
    let move = shown.bottom > view ? shown.bottom - view : shown.top;
    // a result (a History pick, a finished job) is the preview and 3D view under the box: the box goes to the top
    if (RESULT_STATES.includes(state)) move = whole.top;
    window.scrollBy({top: move, behavior: 'instant'});
  };
  new MutationObserver(() => { announce(); follow(); mend(); }).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['tabindex']});

  // A server that stopped is said so (the page would otherwise show its last progress bar forever).
  let down = 0;
  const watch = async () => {
    let ok = false;
    try {
      ok = (await fetch(new URL('robots.txt', document.baseURI), {cache: 'no-store'})).ok;
    } catch (err) { ok = false; }
    let note = $('#td-offline');
    if (!ok && ++down >= 2 && !note) {
      note = document.createElement('div');
      note.id = 'td-offline';
      note.setAttribute('role', 'alert');
      note.textContent = 'The app has stopped (its server no longer answers): a running job did not finish. ' +
                         'Start the app again, then reload this page.';
      document.body.prepend(note);
      const box = $('#td-status [data-state]');
      if (box && ['running', 'queued'].includes(box.dataset.state)) {
        box.dataset.state = 'stopped';
        box.classList.remove('td-running', 'td-queued');
        box.classList.add('td-stopped');
        box.querySelectorAll('progress').forEach((bar) => bar.remove());
        const line = box.querySelector('.td-line');
        if (line) line.textContent = 'Stopped: the app closed while this job ran.';
      }
    }
    if (!ok && note) {
      // No control left offering what cannot happen any more (Generate, Cancel, Export again, the errors' buttons);
      // again at every check, as Gradio re-renders the components its last events reached.
      document.querySelectorAll('.gradio-container :is(button, input, textarea, select)').forEach((el) => {
        el.disabled = true;
      });
      const generate = $('#td-generate');
      if (generate) generate.textContent = 'App stopped';
    } else if (ok) {
      down = 0;
      if (note) note.textContent = 'The app is running again: reload this page to use it.';
    }
    setTimeout(watch, ok ? 3000 : 2000);
  };
  setTimeout(watch, 3000);       // Gradio may add this script after the page's load event
})();
"""

HEAD = f"<script>{SCRIPT}</script>"
