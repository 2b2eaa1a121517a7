/* 八闽健康码 chat widget: <script src="/widget/widget.js" async data-api data-lang data-title data-open data-position>.
 * window.HCWidget = {open, close, toggle, signIn, signOut, send, setLang}; events hcwidget:ready, hcwidget:auth.
 * All text goes in as text nodes; the server's history is the source of truth. */
(function () {
  'use strict';
  if (window.HCWidget) return;
  var doc = document;
  var script = doc.currentScript || doc.querySelector('script[src*="widget.js"]');
  var ds = (script && script.dataset) || {};
  var SRC = new URL(script && script.src ? script.src : '/widget/widget.js', location.href);
  var API = (ds.api || SRC.origin).replace(/\/+$/, '');
  var MAX = 2000, WARN = 1800, SLOW_MS = 8000, FROMS = ['user', 'bot', 'agent', 'system'];

  // ---- every interface string (a key missing in zh-hant falls back to zh)
  var T = {
    zh: {
      title: '八闽健康码 智能客服', anon: '智能问答 · 未登录', signed: '已登录 · 可查询本人健康码情况',
      openChat: '打开在线客服', closeChat: '关闭在线客服', unread: '{n}条未读', close: '关闭',
      log: '对话记录', inputLabel: '输入您的问题', placeholder: '请输入您的问题,Enter 发送', send: '发送',
      typing: '正在输入', you: '我', bot: '智能客服', agent: '人工客服', system: '通知',
      unsent: '未发送', offline: '暂时连不上,请稍后重试', busy: '客服系统正忙,请稍后重试', tooFast: '发送太快了,稍等几秒会自动重发', retry: '重试',
      tooLong: '消息超过 {max} 字,请精简后再发送', expired: '登录已过期,请重新登录。您输入的内容已保留。',
      welcome: '您好!我是“八闽健康码”智能客服,可以解答健康码申领、使用等问题。请直接提问,或点选常见问题:',
      s1: '健康码可以截图吗', s2: '为什么我的码是橙色', s3: '转人工',
      hoOpen: '已转人工 · 工单 {id} · 排队中', hoClaimed: '人工客服已接入 · 工单 {id}', hoDone: '工单 {id} 已处理完毕,欢迎评价',
      yes: '有帮助', no: '没帮助', r3: '满意', r2: '一般', r1: '不满意'
    },
    'zh-hant': {
      title: '八閩健康碼 智能客服', anon: '智能問答 · 未登入', signed: '已登入 · 可查詢本人健康碼情況',
      openChat: '打開線上客服', closeChat: '關閉線上客服', unread: '{n}則未讀', close: '關閉',
      log: '對話記錄', inputLabel: '輸入您的問題', placeholder: '請輸入您的問題,Enter 傳送', send: '傳送',
      typing: '正在輸入', unsent: '未傳送', offline: '暫時連不上,請稍後重試', busy: '客服系統正忙,請稍後重試', tooFast: '發送太快了,稍等幾秒會自動重發', retry: '重試',
      tooLong: '訊息超過 {max} 字,請精簡後再傳送', expired: '登入已過期,請重新登入。您輸入的內容已保留。',
      welcome: '您好!我是「八閩健康碼」智能客服,可以解答健康碼申領、使用等問題。請直接提問,或點選常見問題:',
      s1: '健康碼可以截圖嗎', s2: '為什麼我的碼是橙色', s3: '轉人工',
      hoOpen: '已轉人工 · 工單 {id} · 排隊中', hoClaimed: '人工客服已接入 · 工單 {id}', hoDone: '工單 {id} 已處理完畢,歡迎評價',
      yes: '有幫助', no: '沒幫助', r3: '滿意', r1: '不滿意'
    },
    en: {
      title: 'Bamin Health Code Assistant', anon: 'Not signed in', signed: 'Signed in · can check your own code',
      openChat: 'Open chat', closeChat: 'Close chat', unread: '{n} unread', close: 'Close',
      log: 'Conversation', inputLabel: 'Type your question', placeholder: 'Type your question, Enter to send', send: 'Send',
      typing: 'Typing', you: 'Me', bot: 'Assistant', agent: 'Agent', system: 'Notice',
      unsent: 'Not sent', offline: 'Cannot connect. Please try again.', busy: 'The service is busy. Please try again.', tooFast: 'Too many messages at once. Sending again in a few seconds.', retry: 'Retry',
      tooLong: 'Please keep it under {max} characters.', expired: 'Your sign-in expired; please sign in again. Your text is kept.',
      welcome: 'Hello! I am the Bamin Health Code (八闽健康码) assistant. Ask me about applying for and using the code, or pick a question:',
      s1: 'Can I use a screenshot of my health code?', s2: 'Why is my code orange?', s3: 'Talk to a person',
      hoOpen: 'Ticket {id} · waiting for an agent', hoClaimed: 'An agent has joined · ticket {id}', hoDone: 'Ticket {id} resolved; please rate it',
      yes: 'Helpful', no: 'Not helpful', r3: 'Satisfied', r2: 'Neutral', r1: 'Dissatisfied'
    }
  };
  var HTML_LANG = { zh: 'zh-CN', 'zh-hant': 'zh-Hant', en: 'en' };

  function normLang(l) {
    l = String(l || '').toLowerCase();
    if (l === 'zh-hant' || /^zh-(tw|hk|mo|hant)/.test(l)) return 'zh-hant';
    if (/^zh/.test(l)) return 'zh';
    return /^en/.test(l) ? 'en' : null;
  }
  function save(k, v) { try { if (v == null) localStorage.removeItem('hcw:' + k); else localStorage.setItem('hcw:' + k, v); } catch (e) { /* private mode */ } }
  function load(k) { try { return localStorage.getItem('hcw:' + k); } catch (e) { return null; } }
  function newSender() {
    var b = new Uint8Array(12); crypto.getRandomValues(b);
    return 'w-' + Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
  }

  var lang = normLang(load('lang')) || normLang(ds.lang) || normLang(navigator.language) || 'en';
  var sender = load('sender');
  if (!sender || sender.length > 128) { sender = newSender(); save('sender', sender); }
  var token = load('token');

  function t(key, vars) {
    var s = (T[lang] && T[lang][key]) || T.zh[key] || key;
    return s.replace(/\{(\w+)\}/g, function (_, k) { return vars && vars[k] != null ? vars[k] : k === 'max' ? MAX : ''; });
  }

  // ---- DOM helpers
  function h(tag, attrs, kids) {
    var el = doc.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 't') { el.setAttribute('data-t', v); el.textContent = t(v); }
      else if (k === 'ta') { el.setAttribute('data-ta', v); }
      else el.setAttribute(k, v === true ? '' : v);
    });
    (kids || []).forEach(function (c) { if (c) el.appendChild(typeof c === 'string' ? doc.createTextNode(c) : c); });
    return el;
  }
  function icon(d, cls) {
    var NS = 'http://www.w3.org/2000/svg', s = doc.createElementNS(NS, 'svg'), p = doc.createElementNS(NS, 'path');
    s.setAttribute('viewBox', '0 0 24 24'); s.setAttribute('aria-hidden', 'true'); s.setAttribute('focusable', 'false');
    s.setAttribute('class', cls); p.setAttribute('d', d); s.appendChild(p); return s;
  }
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }
  // data-t="key" (text), data-ta="attr:key;…" (attributes)
  function relabel() {
    each(root.querySelectorAll('[data-t]'), function (el) { el.textContent = t(el.getAttribute('data-t')); });
    each(root.querySelectorAll('[data-ta]'), function (el) {
      el.getAttribute('data-ta').split(';').forEach(function (pair) { var kv = pair.split(':'); el.setAttribute(kv[0], t(kv[1])); });
    });
  }

  // URLs and phone numbers: links built from text pieces
  var LINKS = /(https?:\/\/[^\s<>"'\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]+)|(\b0\d{2,3}-\d{7,8}(?!\d)|\b400-?\d{3}-?\d{4}(?!\d)|\b1[3-9]\d{9}(?!\d)|\b12345(?!\d))/g;
  function richText(parent, text) {
    var last = 0, m;
    LINKS.lastIndex = 0;
    while ((m = LINKS.exec(text))) {
      var s = m[0];
      if (m[1]) s = s.replace(/[.,;:!?)\]]+$/, '');
      if (m.index > last) parent.appendChild(doc.createTextNode(text.slice(last, m.index)));
      var a = h('a', { rel: 'noopener noreferrer', text: s });
      if (m[1]) { a.href = s; a.target = '_blank'; } else a.href = 'tel:' + s.replace(/\D/g, '');
      parent.appendChild(a);
      last = m.index + s.length; LINKS.lastIndex = last;
    }
    if (last < text.length) parent.appendChild(doc.createTextNode(text.slice(last)));
  }

  // ---- the widget's DOM
  var root, launcher, badge, panel, titleEl, subEl, banner, list, typing, alertBox, alertText, retryBtn, limitEl, form, input, counter, sendBtn, live;
  var isOpen = false, unread = 0;

  function build() {
    root = h('div', { class: 'hcw' + (ds.position === 'left' ? ' hcw-left' : ''), 'data-hc': 'root' });
    // hidden until its stylesheet is in
    var show = function () { root.hidden = false; };
    if (!doc.querySelector('link[data-hcw]')) {
      root.hidden = true;
      var link = h('link', { rel: 'stylesheet', href: new URL('widget.css', SRC).href, 'data-hcw': '' });
      link.addEventListener('load', show); link.addEventListener('error', show); setTimeout(show, 3000);
      doc.head.appendChild(link);
    }
    badge = h('span', { class: 'hcw-badge', 'data-hc': 'unread', 'aria-hidden': 'true', hidden: true });
    launcher = h('button', { type: 'button', class: 'hcw-launcher', 'data-hc': 'launcher', 'aria-expanded': 'false', 'aria-controls': 'hcw-panel' },
      [icon('M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H10l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z', 'hcw-ico'), badge]);
    titleEl = h('h2', { class: 'hcw-title', id: 'hcw-title' });
    subEl = h('p', { class: 'hcw-sub' });
    var closeBtn = h('button', { type: 'button', class: 'hcw-close', 'data-hc': 'close', ta: 'aria-label:close;title:close' }, [icon('M6 6l12 12M18 6L6 18', 'hcw-x')]);
    banner = h('div', { class: 'hcw-banner', 'data-hc': 'handoff', role: 'status', hidden: true });
    typing = h('div', { class: 'hcw-typing', 'data-hc': 'typing', role: 'img', ta: 'aria-label:typing', hidden: true }, [h('span'), h('span'), h('span')]);
    list = h('div', { class: 'hcw-list', 'data-hc': 'messages', role: 'log', 'aria-live': 'off', tabindex: '0', ta: 'aria-label:log' }, [typing]);
    alertText = h('span');
    retryBtn = h('button', { type: 'button', class: 'hcw-retry', 'data-hc': 'retry', t: 'retry' });
    alertBox = h('div', { class: 'hcw-alert', 'data-hc': 'alert', role: 'status', hidden: true }, [alertText, retryBtn]);
    limitEl = h('div', { class: 'hcw-alert hcw-limit', 'data-hc': 'limit', role: 'status', t: 'tooLong', hidden: true });
    input = h('textarea', { id: 'hcw-input', class: 'hcw-input', 'data-hc': 'input', rows: '1', ta: 'placeholder:placeholder', 'aria-describedby': 'hcw-count' });
    counter = h('span', { id: 'hcw-count', class: 'hcw-count', 'data-hc': 'counter', hidden: true });
    sendBtn = h('button', { type: 'submit', class: 'hcw-send', 'data-hc': 'send', ta: 'aria-label:send;title:send' }, [icon('M3 20.5l18.5-8.5L3 3.5V10l12 2-12 2z', 'hcw-ico')]);
    form = h('form', { class: 'hcw-form', novalidate: true }, [
      h('label', { class: 'hcw-sr', for: 'hcw-input', t: 'inputLabel' }), input, counter, sendBtn]);
    live = h('div', { class: 'hcw-sr', 'aria-live': 'polite', 'data-hc': 'live' });
    panel = h('section', { class: 'hcw-panel', id: 'hcw-panel', role: 'dialog', 'aria-labelledby': 'hcw-title', hidden: true }, [
      h('header', { class: 'hcw-head' }, [h('span', { class: 'hcw-logo', 'aria-hidden': 'true', text: '闽' }),
        h('div', { class: 'hcw-heading' }, [titleEl, subEl]), closeBtn]),
      banner, list, alertBox, limitEl, form, live]);
    root.appendChild(panel); root.appendChild(launcher);
    doc.body.appendChild(root);

    launcher.addEventListener('click', toggle);
    closeBtn.addEventListener('click', function () { close(); launcher.focus(); });
    panel.addEventListener('keydown', function (e) { if (e.key === 'Escape') { e.preventDefault(); close(); launcher.focus(); } });
    form.addEventListener('submit', function (e) { e.preventDefault(); submit(); });
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); submit(); }
    });
    input.addEventListener('input', onInput);
    retryBtn.addEventListener('click', retry);
    applyLang();
  }

  function applyLang() {
    root.setAttribute('lang', HTML_LANG[lang]);
    relabel();
    titleEl.textContent = ds.title || t('title');
    subEl.textContent = t(token ? 'signed' : 'anon');
    renderBadge(); renderBanner(); onInput();
    if (alertBox.dataset.key) showAlert(alertBox.dataset.key, !retryBtn.hidden);
  }

  function renderBadge() {
    badge.hidden = !unread;
    badge.textContent = unread > 99 ? '99+' : String(unread);
    launcher.setAttribute('aria-label', t(isOpen ? 'closeChat' : 'openChat') + (unread ? ' (' + t('unread', { n: unread }) + ')' : ''));
  }

  function open() {
    if (isOpen) return;
    isOpen = true; panel.hidden = false; root.classList.add('hcw-open');
    launcher.setAttribute('aria-expanded', 'true');
    unread = 0; renderBadge();
    scrollDown(true);
    input.focus();
  }
  function close() {
    if (!isOpen) return;
    isOpen = false; panel.hidden = true; root.classList.remove('hcw-open');
    launcher.setAttribute('aria-expanded', 'false'); renderBadge();
  }
  function toggle() { if (isOpen) close(); else open(); }

  function scrollDown(force) {
    if (force || list.scrollHeight - list.scrollTop - list.clientHeight < 120) list.scrollTop = list.scrollHeight;
  }

  // ---- messages
  var recs = [], seen = {}, cursor = null, announceQ = [], announceTimer = 0;

  function canon(p) {
    p = String(p || '').trim();
    var i = p.indexOf('{');
    if (i < 0) return p;
    try {
      var o = JSON.parse(p.slice(i));
      return p.slice(0, i) + JSON.stringify(Object.keys(o).sort().map(function (k) { return [k, String(o[k])]; }));
    } catch (e) { return p; }
  }
  function findButton(payload) {
    var c = canon(payload);
    for (var i = recs.length - 1; i >= 0; i--) {
      var bs = recs[i].buttons || [];
      for (var j = 0; j < bs.length; j++) if (canon(bs[j].hc.payload) === c) return bs[j];
    }
    return null;
  }
  // a stored button press no button matches: a label, never the raw payload
  function payloadLabel(p) {
    var m = /^\/(\w+)(\{[\s\S]*\})?\s*$/.exec(p), o = {};
    if (!m) return p;
    try { o = m[2] ? JSON.parse(m[2]) : {}; } catch (e) { /* keep {} */ }
    if (m[1] === 'feedback') return t(o.helpful === 'no' ? 'no' : 'yes');
    if (m[1] === 'rate_ticket' && T.zh['r' + o.score]) return t('r' + o.score);
    if (m[1] === 'request_human') return t('s3');
    return null;
  }
  function markChosen(btn) {
    each(btn.parentNode.children, function (b) {
      b.classList.toggle('hcw-chosen', b === btn); b.setAttribute('aria-pressed', b === btn ? 'true' : 'false');
    });
  }

  // sends the payload, shows the title (the welcome's suggestions: their text)
  function makeButton(bt) {
    var b = h('button', { type: 'button', class: 'hcw-qr' + (/^\/feedback\b/.test(bt.payload) ? ' hcw-fb' : ''),
      'data-hc': 'button', 'aria-pressed': 'false', text: bt.title });
    b.hc = bt;
    b.addEventListener('click', function () {
      if (b.classList.contains('hcw-chosen') && bt.payload) return;
      var payload = bt.payload || b.textContent;
      if (!send(payload, bt.payload && b.textContent)) return;
      markChosen(b);
      if (/^\/rate_ticket/.test(payload)) { rated = true; renderBanner(); }
    });
    return b;
  }

  // m: {id, from, text, buttons, ticket_id} → its record, or null (seen / nothing to show)
  function addMessage(m, liveMsg, before) {
    var id = m.id != null ? String(m.id) : null;
    if (id && seen[id]) return null;
    if (id) seen[id] = true;
    var from = FROMS.indexOf(m.from) < 0 ? 'bot' : m.from;
    var text = typeof m.text === 'string' ? m.text : '';
    var buttons = (Array.isArray(m.buttons) ? m.buttons : []).filter(function (b) { return b && typeof b.title === 'string'; });
    if (from === 'user' && text.charAt(0) === '/') {
      var hit = findButton(text);
      if (/^\/rate_ticket/.test(text)) { rated = true; renderBanner(); }
      if (hit) { markChosen(hit); text = hit.textContent; } else text = payloadLabel(text);
      if (!text) return null;
    }
    if (!text && !buttons.length) return null;
    var el = h('div', { class: 'hcw-msg hcw-' + from, 'data-hc': 'message', 'data-from': from, 'data-id': id });
    el.appendChild(h('span', { class: from === 'agent' ? 'hcw-who' : 'hcw-sr', t: from === 'user' ? 'you' : from }));
    if (text) { var bubble = h('div', { class: 'hcw-bubble' }); richText(bubble, text); el.appendChild(bubble); }
    var rec = { id: id, from: from, el: el, buttons: [] };
    if (buttons.length) {
      var group = el.appendChild(h('div', { class: 'hcw-btns' }));
      buttons.forEach(function (bt) {
        rec.buttons.push(group.appendChild(makeButton({ title: bt.title, payload: String(bt.payload || '') })));
      });
    }
    list.insertBefore(el, before ? before.el : typing);
    if (before) recs.splice(recs.indexOf(before), 0, rec); else recs.push(rec);
    if (m.ticket_id) inferTicket(from, m.ticket_id, buttons);
    if (liveMsg && from !== 'user') {
      if (!isOpen) { unread++; renderBadge(); }
      if (from !== 'system' || buttons.length) announce(t(from) + ': ' + text);
    }
    scrollDown(from === 'user');
    return rec;
  }
  function announce(s) {
    announceQ.push(s.slice(0, 400));
    clearTimeout(announceTimer);
    announceTimer = setTimeout(function () { live.textContent = announceQ.join('\n'); announceQ = []; }, 150);
  }
  function welcome(before) {
    var keys = ['s1', 's2', 's3'];
    var rec = addMessage({ from: 'bot', text: t('welcome'), buttons: keys.map(function (k) { return { title: t(k) }; }) }, false, before);
    rec.el.setAttribute('data-local', 'welcome');
    rec.el.querySelector('.hcw-bubble').setAttribute('data-t', 'welcome');
    rec.buttons.forEach(function (b, i) { b.setAttribute('data-t', keys[i]); });
  }
  // the server's history replaces the list; messages not yet sent stay, after it
  function renderAll(j) {
    var keep = queue.map(function (it) { return it.rec; });
    recs.forEach(function (r) { if (keep.indexOf(r) < 0) r.el.remove(); });
    recs = keep.slice(); seen = {}; inferred = null; rated = false;
    (j.messages || []).slice().sort(function (a, b) { return Number(a.id) - Number(b.id); })
      .forEach(function (m) { addMessage(m, false, keep[0]); });
    if (recs.length === keep.length) welcome(keep[0]);
    cursor = maxId(cursor, j.cursor);
    renderBanner(); scrollDown(true);
  }
  function clearMessages() {
    recs.forEach(function (r) { r.el.remove(); });
    recs = []; seen = {}; cursor = null;
  }

  // ---- the server: headers, history, stream
  function headers(extra) {
    var hd = extra || {};
    if (token) hd.Authorization = 'Bearer ' + token;
    return hd;
  }
  function qs(extra) { return '?sender=' + encodeURIComponent(sender) + (extra || ''); }
  function maxId(a, b) { return a == null ? b : b == null ? a : (Number(b) > Number(a) ? b : a); }

  var gen = 0, streamCtrl = null, backoff = 0, reconnectTimer = 0, streamUp = false, historyLoaded = false, historyTried = false, syncTimer = 0;

  function connect() {
    var g = ++gen;
    clearTimeout(reconnectTimer);
    if (streamCtrl) streamCtrl.abort();
    streamCtrl = new AbortController();
    var signal = streamCtrl.signal;
    (historyLoaded ? Promise.resolve() : loadHistory(signal))
      .then(function () { if (g === gen) return stream(g, signal); })
      .then(function () { if (g === gen) retryLater(g); }, function (err) { if (g === gen && err !== 'auth') retryLater(g); });
  }
  function retryLater(g) {
    streamUp = false;
    var delay = Math.min(30000, 1000 * Math.pow(2, backoff++));
    reconnectTimer = setTimeout(function () { if (g === gen) connect(); }, delay);
  }

  function getJSON(path, signal) {
    return fetch(API + path + qs(), { headers: headers(), signal: signal, cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { expire(); throw 'auth'; }
      if (!r.ok) throw new Error(path + ' ' + r.status);
      return r.json();
    });
  }
  function loadHistory(signal) {
    return getJSON('/api/v1/chat/messages', signal)
      .then(function (j) {
        renderAll(j);
        historyLoaded = historyTried = true;
        refreshHandoff(); pump();
      }, function (err) {
        if (!recs.length) welcome();
        if (err !== 'auth') { historyTried = true; pump(); }
        throw err;
      });
  }

  // SSE over fetch (the Bearer header goes along), after `cursor`
  function stream(g, signal) {
    var url = API + '/api/v1/chat/stream' + qs(cursor ? '&after=' + encodeURIComponent(cursor) : '');
    return fetch(url, { headers: headers({ Accept: 'text/event-stream' }), signal: signal, cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { expire(); throw 'auth'; }
      if (!r.ok || !r.body) throw new Error('stream ' + r.status);
      var reader = r.body.getReader(), dec = new TextDecoder(), buf = '', data = [], evId = null;
      function line(s) {
        if (s === '') {
          if (data.length) onEvent(evId, data.join('\n'));
          data = []; evId = null;
        } else if (s.charAt(0) === ':') {
          if (/^:\s*connected/.test(s)) { backoff = 0; streamUp = true; }
        } else {
          var i = s.indexOf(':'), f = i < 0 ? s : s.slice(0, i), v = i < 0 ? '' : s.slice(i + 1).replace(/^ /, '');
          if (f === 'data') data.push(v); else if (f === 'id') evId = v;
        }
      }
      function pump() {
        return reader.read().then(function (x) {
          if (g !== gen) { reader.cancel(); return; }
          if (x.done) return;
          buf += dec.decode(x.value, { stream: true });
          var lines = buf.split('\n');
          buf = lines.pop();
          lines.forEach(function (s) { line(s.replace(/\r$/, '')); });
          return pump();
        });
      }
      return pump();
    });
  }
  function onEvent(id, data) {
    var m;
    try { m = JSON.parse(data); } catch (e) { return; }
    if (!m || typeof m !== 'object') return;
    if (m.id == null) m.id = id;
    cursor = maxId(cursor, String(m.id));
    var isNew = !seen[String(m.id)];
    addMessage(m, true);
    // a bot reply nobody here asked for: asked elsewhere, so re-read the history
    if (isNew && m.from === 'bot' && !busy) {
      clearTimeout(syncTimer); syncTimer = setTimeout(sync, 400);
    }
  }
  function sync() {
    if (busy) return;
    getJSON('/api/v1/chat/messages').then(function (j) { if (!busy) renderAll(j); }, function () { /* the next event tries again */ });
  }

  // ---- hand-off banner
  var ticket = null, inferred = null, rated = false, handoffTimer = 0;

  function inferTicket(from, id, buttons) {
    if (!inferred || inferred.id !== id) { inferred = { id: id, status: 'open' }; rated = false; }
    if (from === 'agent' && inferred.status !== 'resolved') inferred.status = 'claimed';
    if (from === 'system' && buttons.some(function (b) { return /^\/rate_ticket/.test(b.payload); })) inferred.status = 'resolved';
    renderBanner(); refreshHandoff();
  }
  function refreshHandoff() {
    clearTimeout(handoffTimer);
    handoffTimer = setTimeout(function () {
      // 404 (older server): the messages' ticket ids decide alone
      getJSON('/api/v1/chat/handoff').then(function (j) { ticket = j.ticket || false; renderBanner(); }, function () { /* keep */ });
    }, 250);
  }
  function renderBanner() {
    if (!banner) return;
    // the server's state (false: none) or else what the messages said
    var tk = ticket === false ? null : ticket || (inferred && { id: inferred.id, status: inferred.status, rating_pending: !rated });
    var key = !tk ? null : tk.status === 'open' ? 'hoOpen' : tk.status === 'claimed' ? 'hoClaimed' : tk.rating_pending ? 'hoDone' : null;
    banner.hidden = !key;
    banner.className = 'hcw-banner' + (key ? ' hcw-' + tk.status : '');
    banner.textContent = key ? t(key, { id: tk.id }) : '';
  }

  // ---- sending
  var queue = [], busy = false, failed = false, autoRetry = 0;

  function chars(s) { return Array.from(s).length; }
  function onInput() {
    if (!input) return;
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 132) + 'px';
    var n = chars(input.value), over = n > MAX;
    counter.hidden = n <= WARN;
    counter.textContent = n + '/' + MAX;
    counter.classList.toggle('hcw-over', over);
    sendBtn.disabled = over;
    input.setAttribute('aria-invalid', over ? 'true' : 'false');
    limitEl.hidden = !over;
  }
  function showAlert(key, withRetry) {
    alertBox.dataset.key = key;
    alertText.textContent = t(key);
    retryBtn.hidden = !withRetry;
    alertBox.hidden = false;
    alertBox.classList.toggle('hcw-warn', !!withRetry);
  }
  function hideAlert() { alertBox.hidden = true; delete alertBox.dataset.key; }

  function submit() {
    var text = input.value;
    if (!text.trim()) { input.focus(); return; }
    if (send(text)) { input.value = ''; onInput(); }
    input.focus();
  }

  // queue a user message, shown at once (`title`: a button's)
  function send(text, title) {
    text = String(text == null ? '' : text);
    if (!text.trim()) return false;
    if (chars(text) > MAX) { limitEl.hidden = false; return false; }
    var rec = addMessage({ from: 'user', text: title || text }, false);
    rec.user = true;
    rec.el.classList.add('hcw-pending');
    queue.push({ text: text, rec: rec, typed: !title });
    if (failed) retry(); else pump();
    return true;
  }

  function setUnsent(item, on) {
    var el = item.rec.el, st = el.querySelector('.hcw-state');
    el.classList.toggle('hcw-unsent', on);
    if (on && !st) el.appendChild(h('span', { class: 'hcw-state', t: 'unsent' }));
    if (!on && st) st.remove();
  }
  function fail(key, retryAfter) {
    failed = true; busy = false; typing.hidden = true;
    queue.forEach(function (it) { setUnsent(it, true); });
    showAlert(key, true);
    clearTimeout(autoRetry);
    if (retryAfter) autoRetry = setTimeout(retry, Math.min(30, Math.max(1, retryAfter)) * 1000);
  }
  function retry() {
    clearTimeout(autoRetry);
    var head = queue[0];
    if (head && head.ctrl) head.ctrl.abort();
    failed = false; busy = false; hideAlert();
    pump();
  }

  function pump() {
    if (busy || failed || !queue.length || !historyTried) return;
    var item = queue[0], attempt = {};
    item.attempt = attempt;
    item.ctrl = new AbortController();
    busy = true; typing.hidden = false; scrollDown(true);
    var slow = setTimeout(function () { if (item.attempt === attempt && busy) fail('offline'); }, SLOW_MS);
    fetch(API + '/api/v1/chat', {
      method: 'POST', headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ sender: sender, text: item.text }), signal: item.ctrl.signal
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) { return { r: r, j: j }; });
    }).then(function (x) {
      clearTimeout(slow);
      if (x.r.ok) return done(item, x.j);
      var st = x.r.status;
      if (item.attempt !== attempt) return;
      if (st === 401) return expire();
      if (st === 413 || st === 422) {           // not worth a retry
        queue.shift(); busy = false; typing.hidden = true; setUnsent(item, true);
        showAlert((x.j.error || {}).code === 'empty_text' ? 'inputLabel' : 'tooLong', false);
        return pump();
      }
      // 429 and 503 say when to come back (Retry-After): the message goes again by itself then.
      var after = st === 429 || st === 503 ? Number(x.r.headers.get('Retry-After')) || 5 : 0;
      fail(st === 429 ? 'tooFast' : st >= 500 ? 'busy' : 'offline', after);
    }, function () {
      clearTimeout(slow);
      if (item.attempt === attempt && queue[0] === item) fail('offline');
    });
  }
  function done(item, j) {
    // a late answer still counts (and calls off a retry in flight)
    if (queue[0] === item) {
      queue.shift(); item.attempt = null; item.ctrl.abort();
      busy = false; failed = false; typing.hidden = true;
      clearTimeout(autoRetry);
      if (!alertBox.hidden && !retryBtn.hidden) hideAlert();
      item.rec.el.classList.remove('hcw-pending'); setUnsent(item, false);
    }
    (j.messages || []).forEach(function (m) { addMessage({ id: m.id, from: 'bot', text: m.text, buttons: m.buttons }, true); });
    var meta = j.meta || {};
    if (meta.lang) setLang(meta.lang);
    if (meta.ticket_id && meta.handoff && (!inferred || inferred.id !== meta.ticket_id)) inferTicket('bot', meta.ticket_id, []);
    else if (meta.handoff || meta.ticket_id || ticket || inferred) refreshHandoff();
    if (!streamUp) { backoff = 0; connect(); }
    if (tabs) tabs.postMessage('turn');
    pump();
  }

  // ---- identity
  // another conversation on the server; unsent typed text goes back into the input
  function switchIdentity(newToken, reason) {
    var keep = queue.filter(function (it) { return it.typed; }).map(function (it) { return it.text; });
    if (queue[0] && queue[0].ctrl) queue[0].ctrl.abort();
    queue = []; busy = false; failed = false; typing.hidden = true; clearTimeout(autoRetry);
    if (keep.length) input.value = keep.concat(input.value ? [input.value] : []).join('\n');
    token = newToken; save('token', token);
    clearMessages(); historyLoaded = historyTried = false; ticket = null; inferred = null; rated = false; renderBanner();
    hideAlert(); applyLang();
    if (reason === 'expired') showAlert('expired', false);
    connect();
    window.dispatchEvent(new CustomEvent('hcwidget:auth', { detail: { signedIn: !!token, reason: reason } }));
  }
  function expire() { if (token) switchIdentity(null, 'expired'); }

  function setLang(l) {
    l = normLang(l);
    if (!l || !root) return;
    var changed = l !== lang;
    lang = l; save('lang', l);
    if (changed) applyLang();
  }

  // other tabs share sender and token
  var tabs = window.BroadcastChannel ? new BroadcastChannel('hcw:' + sender) : null;
  if (tabs) tabs.onmessage = function () { clearTimeout(syncTimer); syncTimer = setTimeout(sync, 100); };
  window.addEventListener('storage', function (e) {
    if (e.key === 'hcw:token' && (e.newValue || null) !== token && root) switchIdentity(e.newValue || null, e.newValue ? 'signin' : 'signout');
  });

  function init() {
    build();
    connect();
    var api = {
      open: open, close: close, toggle: toggle,
      signIn: function (tk) {
        if (typeof tk !== 'string' || !tk || tk.length > 512) throw new TypeError('signIn(token)');
        switchIdentity(tk, 'signin');
      },
      signOut: function () { switchIdentity(null, 'signout'); },
      send: function (text) { return send(text); },
      setLang: function (l) { if (!normLang(l)) throw new TypeError('setLang(zh|zh-hant|en)'); setLang(l); },
      isSignedIn: function () { return !!token; }
    };
    window.HCWidget = Object.freeze(api);
    if (ds.open === 'true') open();
    window.dispatchEvent(new CustomEvent('hcwidget:ready', { detail: api }));
  }
  if (doc.body) init(); else doc.addEventListener('DOMContentLoaded', init);
})();
