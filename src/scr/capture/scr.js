/* scr.js: records a chat session in this page and sends its completion to scr.
 *
 *   scr.start({key: "scr_…", model: "gpt-4o", userId: "u_42"});  // a publishable key
 *   scr.message("user", text); scr.message("assistant", text);
 *   scr.usage({input_tokens: 12, output_tokens: 40});            // as the model API reports
 *   scr.end("success");                                          // or let the page close
 *
 * The completion goes out with navigator.sendBeacon when scr.end() is called, or when the
 * page is hidden or closed (pagehide / visibilitychange to hidden: beforeunload is not
 * reliable, least of all on mobile). Each part of a session is sent once; a session that
 * goes on after its page was hidden sends its later part as the next segment. The server
 * derives the event id from (tenant, session id, segment), so a repeat is a duplicate.
 * No dependencies, no cookies, nothing sent until there is something to record.
 */
(function (global) {
  "use strict";
  if (global.scr && global.scr.version) return;

  var MAX_FINAL_MESSAGE_CHARS = 4096;
  var script = document.currentScript;
  var scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : "";
  var session = null;

  function now() { return new Date().toISOString(); }

  function newId() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function storedSegment(sessionId) {
    // A session id the app keeps across reloads resumes its segment count (sessionStorage).
    try { return parseInt(global.sessionStorage.getItem("scr:segment:" + sessionId) || "0", 10) || 0; }
    catch (e) { return 0; }
  }

  function storeSegment(sessionId, segment) {
    try { global.sessionStorage.setItem("scr:segment:" + sessionId, String(segment)); } catch (e) {}
  }

  function openPart() {
    session.part = {start: now(), input: 0, output: 0, cacheRead: null, reasoning: null,
                    messages: 0, finalMessage: null, model: session.model, sent: false};
  }

  function current() {
    if (!session) throw new Error("scr: call scr.start({...}) first");
    if (session.part.sent) {  // the page came back after it was hidden: a new segment
      session.segment += 1;
      storeSegment(session.sessionId, session.segment);
      openPart();
    }
    return session.part;
  }

  function start(options) {
    options = options || {};
    if (!options.key) throw new Error("scr.start: a publishable key is required");
    var sessionId = options.sessionId || newId();
    session = {
      key: options.key,
      endpoint: options.endpoint || scriptOrigin + "/v1/browser/events",
      sessionId: sessionId,
      segment: options.sessionId ? storedSegment(sessionId) : 0,
      model: options.model || "unknown",
      provider: options.provider || null,
      userId: options.userId || null,
      tier: options.tier || null,
      sessionType: options.sessionType || "chat",
      tags: options.tags || {},
      clientVersion: options.clientVersion || null,
      captureFinalMessage: options.captureFinalMessage === true,
      closeStatus: options.closeStatus || "user_terminated",
    };
    openPart();
    return sessionId;
  }

  function message(role, text) {
    var part = current();
    part.messages += 1;
    if (role === "assistant" && session.captureFinalMessage && typeof text === "string") {
      part.finalMessage = text.slice(0, MAX_FINAL_MESSAGE_CHARS);
    }
  }

  function usage(reported) {
    var part = current();
    reported = reported || {};
    part.input += reported.input_tokens || reported.prompt_tokens || 0;
    part.output += reported.output_tokens || reported.completion_tokens || 0;
    if (reported.cache_read_tokens != null) part.cacheRead = (part.cacheRead || 0) + reported.cache_read_tokens;
    if (reported.reasoning_tokens != null) part.reasoning = (part.reasoning || 0) + reported.reasoning_tokens;
    if (reported.model) part.model = reported.model;
  }

  function body(part, status, errorCode) {
    var record = {
      session_id: session.sessionId, segment: session.segment, session_type: session.sessionType,
      start_time: part.start, end_time: now(), model: part.model,
      input_tokens: part.input, output_tokens: part.output, messages: part.messages,
      status: status, tags: session.tags,
    };
    var optional = {
      provider: session.provider, user_id: session.userId, tier: session.tier,
      client_version: session.clientVersion, cache_read_tokens: part.cacheRead,
      reasoning_tokens: part.reasoning, final_message: part.finalMessage, error_code: errorCode,
    };
    for (var name in optional) if (optional[name] != null) record[name] = optional[name];
    return JSON.stringify(record);
  }

  function send(status, errorCode) {
    var part = session.part;
    part.sent = true;  // once: the body is built here and never again for this segment
    var payload = body(part, status, errorCode || null);
    var url = session.endpoint + "?key=" + encodeURIComponent(session.key);
    var queued = false;
    try {
      // A string body goes as text/plain: a CORS-safelisted type, so no preflight is needed.
      queued = navigator.sendBeacon(url, payload);
    } catch (e) { queued = false; }
    if (!queued && global.fetch) {
      global.fetch(url, {method: "POST", body: payload, keepalive: true, credentials: "omit",
                         headers: {"content-type": "text/plain"}}).catch(function () {});
    }
    return true;
  }

  function end(status, details) {
    if (!session || session.part.sent) return false;
    return send(status || "success", details && details.errorCode);
  }

  function onHidden() {
    if (!session || session.part.sent) return;
    var part = session.part;
    if (part.messages || part.input || part.output) send(session.closeStatus, null);
  }

  global.addEventListener("pagehide", onHidden);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") onHidden();
  });

  global.scr = {version: "1", start: start, message: message, usage: usage, end: end};
})(window);
