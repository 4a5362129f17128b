"""A page script for the browser tests: the app's message stream (/gradio_api/queue/data) hands its `close_stream`
message to the page `window.__tdLateClose` milliseconds later than it arrived (0 at first: set it when the page is
ready), every other message at once.

That is how a loaded machine can order them: Gradio's server ends a page's stream with `close_stream` once no event
of that page is pending, and the page's next event may be answered (its /queue/join) before the page has read that
message. Gradio's client then believes the stream is open, does not open a new one, and the event's messages wait
on the server for a stream that nobody opens."""

SCRIPT = r"""
(() => {
  const original = window.fetch;
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  window.__tdLateClose = 0;
  window.__tdStreamCloses = 0;
  window.__tdHeldCloses = 0;           // held now: set __tdLateClose to 0 and wait for none before on-time events
  window.fetch = async (...args) => {
    const response = await original(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (!url.includes('/queue/data') || !response.body) return response;
    const decoder = new TextDecoder(), encoder = new TextEncoder();
    let held = '';
    const late = new TransformStream({
      async transform(chunk, out) {
        held += decoder.decode(chunk, {stream: true});
        const parts = held.split('\n\n');
        held = parts.pop();
        for (const part of parts) {
          if (part.includes('"close_stream"') && window.__tdLateClose > 0) {
            window.__tdStreamCloses += 1;
            window.__tdHeldCloses += 1;
            await sleep(window.__tdLateClose);
            window.__tdHeldCloses -= 1;
          }
          out.enqueue(encoder.encode(part + '\n\n'));
        }
      },
      flush(out) { if (held) out.enqueue(encoder.encode(held)); },
    });
    return new Response(response.body.pipeThrough(late),
                        {status: response.status, statusText: response.statusText, headers: response.headers});
  };
})();
"""

