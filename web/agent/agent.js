/* 八闽健康码 · 热线坐席工作台 (the hotline agents' assist panel, served at /agent).
 *
 * Plain JS, no framework, no build step, nothing fetched but this origin's API (the page's CSP
 * forbids inline scripts and styles, eval and any other origin). Every text that comes from the
 * server goes in as text (textContent / text nodes), never as HTML: transcripts are user-typed.
 *
 *   sign-in   the agent token, checked with GET /api/v1/agent/me, kept in sessionStorage
 *   queue     GET /api/v1/agent/tickets (longest waiting first), kept live by the agents' SSE
 *             stream (fetch + ReadableStream, bearer header; reconnects with backoff and resumes
 *             with ?after=<last event id>)
 *   ticket    GET /api/v1/agent/tickets/{id}: transcript, findings, account summary, suggested
 *             answers, notes, history; claim / unclaim / messages / notes / resolve / reveal-phone
 */
(function () {
  'use strict';

  const API = '/api/v1/agent';
  const TOKEN_KEY = 'hc.agent.token';
  const SOUND_KEY = 'hc.agent.sound';
  const BASE_TITLE = '坐席工作台 · 八闽健康码';
  const DETAIL_REFRESH_MS = 10000;
  const STREAM_IDLE_MS = 45000;          // no byte (not even a ping) for this long: reconnect
  const TZ = 'Asia/Shanghai';            // the hotline's clock, whatever the browser's

  const CATEGORIES = {
    'orange.origin_not_synced': '来源地码未同步',
    'orange.quarantine_release_pending': '隔离期满未转码',
    'orange.overseas_observation': '入境医学观察',
    'orange.risk': '风险标记',
    'generate.auth_level_low': '实名等级不足',
    'generate.minor': '未成年人',
    'generate.origin_missing': '来源地码缺失',
    'face.identity_mismatch': '身份信息不一致',
    'face.retry_other_login': '人脸核验多次失败',
    'face.service_error': '人脸服务故障',
    'name.mismatch': '姓名不符',
    'family.blocked_orange': '家人申领受限',
    'family.blocked_domestic_arrival': '家人申领受限',
    'family.blocked_overseas_arrival': '家人申领受限',
    'family.quota_full': '家人名额已满',
    'overseas.checkin_missing': '未健康打卡',
    'overseas.not_eligible': '不符合条件',
    'other': '其他',
  };
  // The family.blocked_* codes share a label; the filter tells them apart.
  const CATEGORY_DETAIL = {
    'family.blocked_orange': '家人申领受限（橙码）',
    'family.blocked_domestic_arrival': '家人申领受限（省外来闽）',
    'family.blocked_overseas_arrival': '家人申领受限（境外入闽）',
  };
  const STATUS = { open: '待处理', claimed: '处理中', resolved: '已解决' };
  const CHANNELS = { api: '接口', widget: '网页', web: '网页', wechat: '微信', alipay: '支付宝' };
  const FROM = { user: '用户', bot: '机器人', agent: '坐席', system: '系统' };
  const SATISFACTION = { 3: '满意', 2: '一般', 1: '不满意' };
  const LANGS = { zh: '简体中文', 'zh-hant': '繁体中文', en: '英语' };
  const EVENT_KINDS = {
    created: '创建工单', claimed: '接单', unclaimed: '退回队列', resolved: '解决', message: '坐席回复',
    note: '内部备注', phone_revealed: '查看回拨电话', user_message: '用户消息', rated: '用户评价',
    callback_phone: '留下回拨电话', contact: '留下联系方式',
  };
  const ERRORS = {
    already_claimed: '该工单已被其他坐席接单。',
    not_holder: '您没有持有该工单，不能进行此操作。',
    ticket_resolved: '该工单已经解决。',
    not_found: '工单不存在。',
    invalid_request: '输入的内容无效。',
    invalid_token: '登录已失效，请重新登录。',
    network: '网络连接失败，请检查网络后重试。',
  };

  // --- state ------------------------------------------------------------------------------------
  const state = {
    token: null,
    me: { id: null, name: null },
    tickets: new Map(),       // id → public ticket (the current filter's list, kept live)
    order: [],                // ids in queue order
    filter: { status: 'active', category: '' },
    selectedId: null,
    detail: null,             // the selected ticket's detail
    detailSeq: 0,
    claimedHere: new Set(),   // tickets this session claimed (when the server gives no ids)
    conflict: new Map(),      // ticket id → a 409 message shown until the detail says otherwise
    unread: new Set(),        // tickets with a user message not yet looked at
    drafts: new Map(),        // ticket id → reply draft
    phones: new Map(),        // ticket id → revealed callback number (this page only)
    lastEventId: null,
    streamGen: 0,
    streamCtrl: null,
    unseen: 0,
    lastNewId: '',
    flashTimer: null,
    flashOn: false,
    sound: true,
    audio: null,
    beeps: 0,
    tickTimer: null,
    refreshTimer: null,
    refreshSoon: null,
    wake: null,
    queueSeq: 0,
  };

  const $ = (id) => document.getElementById(id);
  const els = {};

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === 'className') node.className = value;
        else if (key === 'text') node.textContent = value;
        else if (key === 'dataset') Object.assign(node.dataset, value);
        else node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- formatting ---------------------------------------------------------------------------------
  const timeFmt = new Intl.DateTimeFormat('zh-CN', { timeZone: TZ, hour: '2-digit', minute: '2-digit', hour12: false });
  const dayFmt = new Intl.DateTimeFormat('zh-CN', { timeZone: TZ, month: '2-digit', day: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat('zh-CN', {
    timeZone: TZ, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    second: '2-digit', hour12: false,
  });

  function parseTime(iso) {
    const t = Date.parse(iso || '');
    return Number.isFinite(t) ? t : null;
  }

  function shortTime(iso) {
    const t = parseTime(iso);
    if (t === null) return '';
    const d = new Date(t);
    const sameDay = dayFmt.format(d) === dayFmt.format(new Date());
    return sameDay ? timeFmt.format(d) : `${dayFmt.format(d)} ${timeFmt.format(d)}`;
  }

  function fullTime(iso) {
    const t = parseTime(iso);
    return t === null ? '' : fullFmt.format(new Date(t));
  }

  const pad2 = (n) => String(n).padStart(2, '0');

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h > 0 ? `${h}:${pad2(m)}:${pad2(s % 60)}` : `${pad2(m)}:${pad2(s % 60)}`;
  }

  function waited(ms) {
    const min = Math.floor(Math.max(0, ms) / 60000);
    if (min < 1) return '不到 1 分钟';
    if (min < 60) return `${min} 分钟`;
    const h = Math.floor(min / 60);
    if (h < 24) return `${h} 小时 ${min % 60} 分`;
    return `${Math.floor(h / 24)} 天 ${h % 24} 小时`;
  }

  function categoryLabel(code, detailed) {
    if (detailed && CATEGORY_DETAIL[code]) return CATEGORY_DETAIL[code];
    return CATEGORIES[code] || code || '其他';
  }

  /** The first-response countdown: null once answered or resolved. */
  function sla(t, now) {
    if (!t || t.status === 'resolved' || t.first_response_at) return null;
    const due = parseTime(t.sla_due_at);
    if (due === null) return null;
    const left = due - now;
    if (t.overdue || left <= 0) {
      return { text: `已超时 ${clock(-left)}`, overdue: true, soon: false, due };
    }
    return { text: clock(left), overdue: false, soon: left < 5 * 60000, due };
  }

  function paintSla(node, t, now, prefix) {
    const s = sla(t, now);
    if (!s) {
      node.hidden = true;
      node.textContent = '';
      node.classList.remove('overdue', 'soon');
      return;
    }
    node.hidden = false;
    node.textContent = s.overdue ? s.text : `${prefix}${s.text}`;
    node.classList.toggle('overdue', s.overdue);
    node.classList.toggle('soon', s.soon);
    node.title = `首次响应时限：${fullTime(t.sla_due_at)}`;
  }

  function actorLabel(actor) {
    if (!actor) return '';
    if (actor === 'bot') return '机器人';
    if (actor === 'user') return '用户';
    if (actor === 'system') return '系统';
    const m = /^agent:(\d+)$/.exec(actor);
    if (m) {
      if (state.me.id !== null && Number(m[1]) === state.me.id) return `我（${state.me.name || '坐席'}）`;
      return `坐席 #${m[1]}`;
    }
    return actor;
  }

  function errorText(err) {
    if (!err) return '操作失败，请重试。';
    if (err.status === 503) return '服务暂时不可用，请稍后重试。';
    if (err.status === 429) return '操作太频繁，请稍后再试。';
    if (err.status === 413) return '内容太长。';
    return ERRORS[err.code] || err.message || `操作失败（${err.status}），请重试。`;
  }

  // --- who holds what -------------------------------------------------------------------------
  function sameAgent(t) {
    if (t.claimed_by_id !== undefined && t.claimed_by_id !== null && state.me.id !== null) {
      return t.claimed_by_id === state.me.id;
    }
    if (state.me.name && t.claimed_by) return t.claimed_by === state.me.name;
    return state.claimedHere.has(t.id);
  }

  function heldByMe(t) {
    return !!t && t.status === 'claimed' && sameAgent(t);
  }

  /** Held now, or resolved by me (reveal-phone is still allowed then). */
  function mine(t) {
    return !!t && (t.status === 'claimed' || t.status === 'resolved') && !!t.claimed_by && sameAgent(t);
  }

  function heldByOther(t) {
    return !!t && t.status === 'claimed' && !heldByMe(t);
  }

  // --- API ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, opts) {
    const options = opts || {};
    const headers = { Accept: 'application/json' };
    const token = options.token || state.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', ERRORS.network);
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      const error = new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || '');
      if (resp.status === 401 && !options.signingIn) signOut('登录已失效，请重新输入坐席令牌。');
      throw error;
    }
    return data;
  }

  const ticketPath = (id, tail) => `${API}/tickets/${encodeURIComponent(id)}${tail || ''}`;

  // --- announcements, toast, title flash, beep ------------------------------------------------
  function announce(text) {
    const p = el('p', { text });
    els.live.append(p);
    while (els.live.childNodes.length > 4) els.live.removeChild(els.live.firstChild);
  }

  let toastTimer = null;
  function toast(text, kind) {
    els.toast.textContent = text;
    els.toast.dataset.kind = kind || 'error';
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { els.toast.hidden = true; }, kind === 'ok' ? 3000 : 6000);
  }

  function flashTitle(ticketId) {
    state.unseen += 1;
    state.lastNewId = ticketId;
    const flashing = () => `(${state.unseen}) 新工单 ${state.lastNewId} · 坐席工作台`;
    document.title = flashing();
    state.flashOn = true;
    if (state.flashTimer) return;
    state.flashTimer = setInterval(() => {
      state.flashOn = !state.flashOn;
      document.title = state.flashOn ? flashing() : BASE_TITLE;
    }, 1000);
  }

  function stopFlash() {
    if (!state.flashTimer && !state.unseen) return;
    clearInterval(state.flashTimer);
    state.flashTimer = null;
    state.unseen = 0;
    document.title = BASE_TITLE;
  }

  function audioContext() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!state.audio) {
      try {
        state.audio = new Ctx();
      } catch (e) {
        return null;
      }
    }
    if (state.audio.state === 'suspended') state.audio.resume().catch(() => {});
    return state.audio;
  }

  /** A short oscillator beep (no audio file): a higher one for a new ticket. */
  function beep(kind) {
    if (!state.sound) return;
    state.beeps += 1;
    els.soundToggle.dataset.beeps = String(state.beeps);
    const ctx = audioContext();
    if (!ctx) return;
    try {
      const t0 = ctx.currentTime + 0.01;
      const tones = kind === 'message' ? [660] : [880, 1175];
      tones.forEach((freq, i) => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        const start = t0 + i * 0.16;
        osc.type = 'sine';
        osc.frequency.setValueAtTime(freq, start);
        gain.gain.setValueAtTime(0.0001, start);
        gain.gain.exponentialRampToValueAtTime(0.18, start + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.14);
        osc.connect(gain).connect(ctx.destination);
        osc.start(start);
        osc.stop(start + 0.15);
      });
    } catch (e) { /* no sound: never an error for the agent */ }
  }

  function paintSound() {
    els.soundToggle.setAttribute('aria-pressed', state.sound ? 'true' : 'false');
    els.soundToggle.querySelector('.tool-state').textContent = state.sound ? '开' : '关';
  }

  // --- sign-in --------------------------------------------------------------------------------
  async function checkToken(token) {
    try {
      const me = await api('GET', `${API}/me`, undefined, { token, signingIn: true });
      return { id: typeof me.id === 'number' ? me.id : null, name: me.name || null };
    } catch (err) {
      if (err.status !== 404) throw err;
      // A server without /me yet: a list call still tells a good token from a bad one.
      await api('GET', `${API}/tickets?status=open&limit=1`, undefined, { token, signingIn: true });
      return { id: null, name: null };
    }
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    const token = els.token.value.trim();
    els.signinError.hidden = true;
    els.token.removeAttribute('aria-invalid');
    if (!token) {
      signinError('请粘贴坐席令牌。');
      return;
    }
    audioContext();     // a user gesture: the beep may play later
    els.signinBtn.disabled = true;
    els.signinBtn.textContent = '正在验证…';
    try {
      const me = await checkToken(token);
      sessionStorage.setItem(TOKEN_KEY, token);
      els.token.value = '';
      startApp(token, me);
    } catch (err) {
      signinError(err.status === 401 ? '令牌无效或已停用，请检查后重试。' : errorText(err));
    } finally {
      els.signinBtn.disabled = false;
      els.signinBtn.textContent = '登录';
    }
  }

  function signinError(text) {
    els.signinError.textContent = text;
    els.signinError.hidden = false;
    els.token.setAttribute('aria-invalid', 'true');
    els.token.focus();
  }

  function startApp(token, me) {
    state.token = token;
    state.me = me;
    els.meName.textContent = me.name ? `坐席：${me.name}` : '坐席';
    els.signin.hidden = true;
    els.app.hidden = false;
    els.tools.hidden = false;
    document.title = BASE_TITLE;
    loadQueue();
    startStream();
    clearInterval(state.tickTimer);
    state.tickTimer = setInterval(tick, 1000);
    route();
  }

  function signOut(message) {
    state.streamGen += 1;
    if (state.streamCtrl) state.streamCtrl.abort();
    state.streamCtrl = null;
    clearInterval(state.tickTimer);
    clearInterval(state.refreshTimer);
    state.token = null;
    state.me = { id: null, name: null };
    state.tickets.clear();
    state.order = [];
    state.detail = null;
    state.selectedId = null;
    state.lastEventId = null;
    state.claimedHere.clear();
    state.conflict.clear();
    state.unread.clear();
    state.drafts.clear();
    state.phones.clear();
    stopFlash();
    sessionStorage.removeItem(TOKEN_KEY);
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    clear(els.queue);
    rowRefs.clear();
    els.ticket.hidden = true;
    els.ticketEmpty.hidden = false;
    els.app.hidden = true;
    els.tools.hidden = true;
    els.signin.hidden = false;
    if (location.hash) history.replaceState(null, '', location.pathname);
    if (message) signinError(message);
    else els.token.focus();
  }

  // --- the queue --------------------------------------------------------------------------------
  const rowRefs = new Map();    // id → {li, a, sla, wait, ...}

  function matches(t) {
    const f = state.filter;
    if (f.status === 'active' && t.status === 'resolved') return false;
    if (f.status && f.status !== 'active' && t.status !== f.status) return false;
    if (f.category && t.category !== f.category) return false;
    return true;
  }

  function compare(a, b) {
    const ra = a.status === 'resolved' ? 1 : 0;
    const rb = b.status === 'resolved' ? 1 : 0;
    if (ra !== rb) return ra - rb;
    const ta = parseTime(a.created_at) || 0;
    const tb = parseTime(b.created_at) || 0;
    if (ta !== tb) return ta - tb;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  }

  function newer(incoming, current) {
    if (!current) return true;
    const a = parseTime(incoming.updated_at);
    const b = parseTime(current.updated_at);
    return a === null || b === null || a >= b;
  }

  async function loadQueue() {
    const seq = ++state.queueSeq;
    const f = state.filter;
    const params = new URLSearchParams();
    params.set('status', f.status === 'active' ? '' : f.status);
    params.set('category', f.category);
    els.queue.setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', `${API}/tickets?${params}`);
      if (seq !== state.queueSeq) return;
      state.tickets.clear();
      for (const t of data.tickets || []) if (matches(t)) state.tickets.set(t.id, t);
      renderQueue();
    } catch (err) {
      if (seq !== state.queueSeq || err.status === 401) return;
      toast(`工单队列加载失败：${errorText(err)}`);
      setTimeout(() => { if (state.token && seq === state.queueSeq) loadQueue(); }, 5000);
    } finally {
      if (seq === state.queueSeq) els.queue.removeAttribute('aria-busy');
    }
  }

  /** A public ticket from the stream or an action: into the list (or out of it), and the view. */
  function upsert(t) {
    if (!t || !t.id) return;
    const current = state.tickets.get(t.id);
    if (current && !newer(t, current)) return;
    if (matches(t)) state.tickets.set(t.id, t);
    else state.tickets.delete(t.id);
    if (state.detail && state.detail.id === t.id && newer(t, state.detail)) {
      Object.assign(state.detail, t);
      if (!heldByOther(t)) state.conflict.delete(t.id);
      renderTicket();
    }
    renderQueue();
  }

  function renderQueue() {
    const list = [...state.tickets.values()].sort(compare);
    state.order = list.map((t) => t.id);
    const focusedId = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.ticketId : null;
    const keep = new Set(state.order);
    for (const [id, ref] of rowRefs) {
      if (!keep.has(id)) {
        ref.li.remove();
        rowRefs.delete(id);
      }
    }
    const now = Date.now();
    list.forEach((t, i) => {
      let ref = rowRefs.get(t.id);
      if (!ref) {
        ref = makeRow(t.id);
        rowRefs.set(t.id, ref);
      }
      fillRow(ref, t, now);
      const at = els.queue.children[i];
      if (at !== ref.li) els.queue.insertBefore(ref.li, at || null);
    });
    els.queueEmpty.hidden = list.length > 0;
    const overdue = list.filter((t) => (sla(t, now) || {}).overdue).length;
    const waiting = list.filter((t) => t.status === 'open').length;
    els.queueCount.textContent = `${list.length} 条` + (waiting ? ` · 待处理 ${waiting}` : '')
      + (overdue ? ` · 超时 ${overdue}` : '');
    if (focusedId && rowRefs.has(focusedId) && document.activeElement !== rowRefs.get(focusedId).a) {
      rowRefs.get(focusedId).a.focus({ preventScroll: true });
    }
  }

  function makeRow(id) {
    const a = el('a', { className: 'row', href: `#ticket=${encodeURIComponent(id)}`, 'data-hc': 'ticket-row' });
    a.dataset.ticketId = id;
    const idEl = el('span', { className: 'row-id mono' });
    const status = el('span', { className: 'badge' });
    const unread = el('span', { className: 'unread', text: '新消息', hidden: true });
    const slaEl = el('span', { className: 'sla', 'data-hc': 'sla' });
    const category = el('span', { className: 'chip' });
    const summary = el('span', { className: 'row-summary' });
    const channel = el('span', { className: 'row-channel' });
    const wait = el('span', { className: 'row-wait' });
    const holder = el('span', { className: 'row-holder' });
    a.append(
      el('span', { className: 'row-line' }, idEl, status, unread, slaEl),
      el('span', { className: 'row-line' }, category, summary),
      el('span', { className: 'row-line row-meta' }, channel, wait, holder),
    );
    const li = el('li', null, a);
    return { li, a, idEl, status, unread, sla: slaEl, category, summary, channel, wait, holder };
  }

  function fillRow(ref, t, now) {
    ref.t = t;
    ref.a.dataset.status = t.status;
    ref.idEl.textContent = t.id;
    ref.status.textContent = STATUS[t.status] || t.status;
    ref.status.className = `badge ${t.status}`;
    ref.unread.hidden = !state.unread.has(t.id);
    ref.category.textContent = categoryLabel(t.category);
    ref.category.title = t.category;
    ref.summary.textContent = t.summary || '（无摘要）';
    ref.summary.title = t.summary || '';
    ref.channel.textContent = CHANNELS[t.channel] || t.channel || '';
    paintWait(ref.wait, t, now);
    const me = heldByMe(t);
    ref.holder.textContent = t.claimed_by ? `${t.status === 'resolved' ? '解决人' : '处理人'}：${me ? '我' : t.claimed_by}` : '';
    ref.holder.classList.toggle('me', me);
    paintSla(ref.sla, t, now, '首响 ');
    ref.a.classList.toggle('overdue', !!(sla(t, now) || {}).overdue);
    if (t.id === state.selectedId) ref.a.setAttribute('aria-current', 'true');
    else ref.a.removeAttribute('aria-current');
  }

  function paintWait(node, t, now) {
    if (t.status === 'resolved') {
      node.textContent = t.resolved_at ? `解决于 ${shortTime(t.resolved_at)}` : '已解决';
    } else {
      const created = parseTime(t.created_at);
      node.textContent = created === null ? '' : `等待 ${waited(now - created)}`;
    }
  }

  function tick() {
    const now = Date.now();
    for (const ref of rowRefs.values()) {
      if (!ref.t) continue;
      paintSla(ref.sla, ref.t, now, '首响 ');
      ref.a.classList.toggle('overdue', !!(sla(ref.t, now) || {}).overdue);
      paintWait(ref.wait, ref.t, now);
    }
    if (state.detail) paintSla(els.tSla, state.detail, now, '首次响应倒计时 ');
  }

  function onFilter() {
    state.filter = { status: els.statusFilter.value, category: els.categoryFilter.value };
    state.tickets.clear();
    renderQueue();
    loadQueue();
  }

  // --- selecting a ticket -----------------------------------------------------------------------
  function route() {
    const m = /^#ticket=(.+)$/.exec(location.hash);
    const id = m ? decodeURIComponent(m[1]) : null;
    select(id);
  }

  function open(id) {
    const hash = `#ticket=${encodeURIComponent(id)}`;
    if (location.hash === hash) select(id);
    else location.hash = hash;
  }

  function select(id) {
    if (!state.token) return;
    if (state.selectedId && state.selectedId !== id) saveDraft();
    const changed = state.selectedId !== id;
    state.selectedId = id;
    els.app.dataset.view = id ? 'ticket' : 'queue';
    for (const [rid, ref] of rowRefs) {
      if (rid === id) ref.a.setAttribute('aria-current', 'true');
      else ref.a.removeAttribute('aria-current');
    }
    clearInterval(state.refreshTimer);
    if (!id) {
      state.detail = null;
      els.ticket.hidden = true;
      els.ticketEmpty.hidden = false;
      return;
    }
    if (changed) {
      state.detail = null;
      resetSections();
      if (window.matchMedia('(max-width: 760px)').matches) window.scrollTo(0, 0);
      els.reply.value = state.drafts.get(id) || '';
      els.note.value = '';
      els.noteError.hidden = true;
      els.historyBox.open = false;
      state.unread.delete(id);
      const ref = rowRefs.get(id);
      if (ref) ref.unread.hidden = true;
      if (state.lastNewId === id) stopFlash();
      const known = state.tickets.get(id);
      if (known) {
        state.detail = Object.assign({ transcript: null }, known);
        renderTicket();
      } else {
        els.ticketEmpty.hidden = true;
        els.ticket.hidden = false;
        els.tId.textContent = id;
      }
      const ref2 = rowRefs.get(id);
      if (ref2) ref2.li.scrollIntoView({ block: 'nearest' });
    }
    loadDetail(id);
    state.refreshTimer = setInterval(() => {
      if (document.visibilityState === 'visible' && state.selectedId === id) loadDetail(id, true);
    }, DETAIL_REFRESH_MS);
  }

  function resetSections() {
    clear(els.transcript);
    els.transcript.append(el('p', { className: 'line-empty muted', text: '正在加载…' }));
    els.transcript.dataset.key = '';
    els.transcript.dataset.ticket = '';
    for (const node of [els.findings, els.account, els.suggestions, els.notes, els.history, els.phoneBox]) {
      clear(node);
      node.dataset.key = '';
    }
    els.claimedBanner.hidden = true;
    els.resolvedBanner.hidden = true;
    els.callbackCard.hidden = true;
  }

  function saveDraft() {
    if (!state.selectedId) return;
    const text = els.reply.value;
    if (text.trim()) state.drafts.set(state.selectedId, text);
    else state.drafts.delete(state.selectedId);
  }

  async function loadDetail(id, quiet) {
    const seq = ++state.detailSeq;
    try {
      const detail = await api('GET', ticketPath(id));
      if (seq !== state.detailSeq || state.selectedId !== id) return;
      state.detail = detail;
      if (!heldByOther(detail)) state.conflict.delete(id);
      renderTicket();
      // The list learns the freshest public fields too.
      const known = state.tickets.get(id);
      if (known && newer(detail, known)) {
        const pub = Object.assign({}, detail);
        for (const k of ['transcript', 'findings', 'suggestions', 'notes', 'history', 'account']) delete pub[k];
        if (matches(pub)) state.tickets.set(id, pub);
        else state.tickets.delete(id);
        renderQueue();
      }
    } catch (err) {
      if (seq !== state.detailSeq || err.status === 401) return;
      if (err.status === 404) {
        toast(`工单 ${id} 不存在。`);
        return;
      }
      if (!quiet) toast(`工单加载失败：${errorText(err)}`);
    }
  }

  function refreshSoon(id) {
    clearTimeout(state.refreshSoon);
    state.refreshSoon = setTimeout(() => {
      if (state.selectedId === id) loadDetail(id, true);
    }, 150);
  }

  // --- rendering the ticket -------------------------------------------------------------------
  function renderTicket() {
    const d = state.detail;
    if (!d) return;
    els.ticketEmpty.hidden = true;
    els.ticket.hidden = false;
    els.ticket.dataset.status = d.status;
    els.ticket.dataset.ticketId = d.id;
    els.tId.textContent = d.id;
    els.tStatus.textContent = STATUS[d.status] || d.status;
    els.tStatus.className = `badge ${d.status}`;
    els.tCategory.textContent = categoryLabel(d.category, true);
    els.tCategory.title = d.category;
    paintSla(els.tSla, d, Date.now(), '首次响应倒计时 ');
    renderMeta(d);
    renderControls(d);
    if (d.transcript) renderTranscript(d.transcript);
    if (d.findings) renderFindings(d.findings);
    renderAccount(d);
    if (d.suggestions) renderSuggestions(d.suggestions);
    if (d.notes) renderNotes(d.notes);
    if (d.history) renderHistory(d.history);
    renderCallback(d);
  }

  function renderMeta(d) {
    clear(els.tMeta);
    const add = (label, value, cls) => {
      if (value === null || value === undefined || value === '') return;
      els.tMeta.append(el('div', { className: `meta-item ${cls || ''}` }, el('dt', { text: label }), el('dd', { text: value })));
    };
    add('用户', d.user_id ? d.user_id : '匿名');
    add('渠道', CHANNELS[d.channel] || d.channel);
    add('语言', LANGS[d.lang] || d.lang);
    add('创建', shortTime(d.created_at));
    add('处理人', d.claimed_by ? (heldByMe(d) || mine(d) ? `${d.claimed_by}（我）` : d.claimed_by) : '无', d.claimed_by ? '' : 'muted-value');
    if (d.first_response_at) add('首次响应', shortTime(d.first_response_at));
    if (d.awaiting_contact) add('联系方式', '等待用户留下回拨电话', 'attention');
    if (d.status === 'resolved' && d.satisfaction) add('用户评价', SATISFACTION[d.satisfaction] || String(d.satisfaction));
  }

  function renderControls(d) {
    const me = heldByMe(d);
    const other = heldByOther(d);
    const resolved = d.status === 'resolved';
    els.claim.disabled = d.status !== 'open';
    els.claim.textContent = me ? '已接单' : '接单';
    els.unclaim.disabled = !me;
    els.resolve.disabled = !(d.status === 'open' || me);
    els.claim.classList.toggle('primary', d.status === 'open');
    els.resolve.classList.toggle('primary', me);

    const conflict = state.conflict.get(d.id);
    if (other || conflict) {
      const who = other && d.claimed_by ? d.claimed_by : '';
      els.claimedBanner.textContent = who
        ? `已被 ${who} 接单：您只能查看，不能回复或解决。`
        : (conflict || '该工单已被其他坐席接单：您只能查看，不能回复。');
      els.claimedBanner.hidden = false;
    } else {
      els.claimedBanner.hidden = true;
      els.claimedBanner.textContent = '';
    }

    if (resolved) {
      const parts = [`已于 ${shortTime(d.resolved_at) || '—'} 解决`];
      if (d.claimed_by) parts.push(`处理人 ${d.claimed_by}`);
      if (d.satisfaction) parts.push(`用户评价：${SATISFACTION[d.satisfaction] || d.satisfaction}`);
      els.resolvedBanner.textContent = '';
      els.resolvedBanner.append(el('strong', { text: parts.join(' · ') }));
      if (d.resolution) els.resolvedBanner.append(el('span', { className: 'resolution-text', text: `处理结果：${d.resolution}` }));
      els.resolvedBanner.hidden = false;
    } else {
      els.resolvedBanner.hidden = true;
    }

    const canType = !resolved && !other && !conflict;
    els.reply.disabled = !canType;
    els.replySend.disabled = !(me && !conflict);
    let hint;
    if (resolved) hint = '工单已解决，不能再回复。';
    else if (other || conflict) hint = '其他坐席正在处理此工单。';
    else if (!me) hint = '请先接单（C）再发送。';
    else hint = 'Ctrl+Enter 发送';
    els.replyHint.textContent = hint;
    for (const b of els.suggestions.querySelectorAll('button')) b.disabled = !canType;
  }

  /** True when `node` already shows exactly `data` (a 10 s refresh then leaves it, and the
   *  focus inside it, alone). */
  function unchanged(node, data) {
    const key = `${state.detail ? state.detail.id : ''}|${JSON.stringify(data)}`;
    if (node.dataset.key === key) return true;
    node.dataset.key = key;
    return false;
  }

  function nearBottom(node) {
    return node.scrollHeight - node.scrollTop - node.clientHeight < 60;
  }

  function transcriptLine(line) {
    const from = FROM[line.from] ? line.from : 'system';
    return el('div', { className: `line from-${from}`, 'data-hc': 'transcript-line', dataset: { from } },
      el('span', { className: 'line-meta' },
        el('span', { className: 'who', text: FROM[from] }),
        el('time', { datetime: line.at || '', title: fullTime(line.at), text: shortTime(line.at) })),
      el('span', { className: 'bubble', text: line.text || '' }));
  }

  function renderTranscript(lines) {
    const box = els.transcript;
    const key = `${state.detail.id}|${lines.length}|${lines.length ? lines[lines.length - 1].at : ''}`
      + `|${lines.length ? lines[lines.length - 1].text : ''}`;
    if (box.dataset.key === key) return;
    const sameTicket = box.dataset.ticket === state.detail.id;
    const stick = !sameTicket || nearBottom(box);
    clear(box);
    if (!lines.length) box.append(el('p', { className: 'line-empty muted', text: '暂无对话记录' }));
    for (const line of lines) box.append(transcriptLine(line));
    box.dataset.key = key;
    box.dataset.ticket = state.detail.id;
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function appendTranscript(line) {
    const d = state.detail;
    if (!d) return;
    if (!d.transcript) d.transcript = [];
    d.transcript.push(line);
    const box = els.transcript;
    const stick = nearBottom(box);
    const empty = box.querySelector('.line-empty');
    if (empty) empty.remove();
    box.append(transcriptLine(line));
    box.dataset.key = '';
    if (stick || line.from === 'agent') box.scrollTop = box.scrollHeight;
  }

  function renderFindings(findings) {
    if (unchanged(els.findings, findings)) return;
    clear(els.findings);
    if (!findings.length) {
      els.findings.append(el('p', { className: 'muted', text: '没有诊断结论（用户未登录，或未问到账户问题）。' }));
      return;
    }
    for (const f of findings) {
      els.findings.append(el('div', { className: 'finding', 'data-hc': 'finding', dataset: { code: f.code } },
        el('span', { className: 'chip', title: f.code, text: categoryLabel(f.code, true) }),
        el('p', { text: f.text || '' })));
    }
  }

  function renderAccount(d) {
    if (unchanged(els.account, [d.user_id, 'account' in d ? d.account : '-', !!d.transcript])) return;
    clear(els.account);
    if (!('account' in d)) {
      if (d.transcript) els.account.append(el('p', { className: 'muted', text: d.user_id ? '暂无账户摘要。' : '匿名会话' }));
      return;
    }
    if (!d.account) {
      els.account.append(el('p', { className: 'muted', text: d.user_id ? '账户信息暂不可用。' : '匿名会话' }));
      return;
    }
    const dl = el('dl', { className: 'kv' });
    for (const item of d.account) {
      dl.append(el('div', { className: 'kv-row' }, el('dt', { text: item.label }), el('dd', { text: item.value })));
    }
    els.account.append(dl);
  }

  function suggestionSource(s) {
    const src = s.source || '';
    if (src.startsWith('diagnosis:')) return `诊断建议 · ${categoryLabel(src.slice(10), true)}`;
    if (src.startsWith('faq:')) return `知识库 · ${s.title || src.slice(4)}`;
    return s.title || src || '建议';
  }

  function renderSuggestions(list) {
    if (unchanged(els.suggestions, list)) {
      renderControls(state.detail);
      return;
    }
    clear(els.suggestions);
    if (!list.length) {
      els.suggestions.append(el('li', { className: 'muted', text: '暂无建议回复。' }));
      return;
    }
    list.forEach((s, i) => {
      const btn = el('button', { type: 'button', className: 'sugg', 'data-hc': 'suggestion', title: s.text },
        el('span', { className: 'sugg-head' },
          i < 9 ? el('kbd', { text: String(i + 1), 'aria-hidden': 'true' }) : null,
          el('span', { className: 'sugg-src', text: suggestionSource(s) })),
        el('span', { className: 'sugg-text', text: s.text }));
      btn.dataset.index = String(i);
      btn.addEventListener('click', () => useSuggestion(i));
      els.suggestions.append(el('li', null, btn));
    });
    renderControls(state.detail);
  }

  function useSuggestion(i) {
    const d = state.detail;
    if (!d || !d.suggestions || !d.suggestions[i] || els.reply.disabled) return;
    els.reply.value = d.suggestions[i].text;
    els.reply.focus();
    els.reply.setSelectionRange(els.reply.value.length, els.reply.value.length);
    announce('建议回复已放入回复框，可修改后发送。');
  }

  function renderNotes(notes) {
    if (unchanged(els.notes, notes)) return;
    clear(els.notes);
    if (!notes.length) {
      els.notes.append(el('li', { className: 'muted small', text: '暂无备注' }));
      return;
    }
    for (const n of notes) {
      els.notes.append(el('li', { className: 'note', 'data-hc': 'note-item' },
        el('span', { className: 'note-meta' },
          el('span', { text: n.by || '' }),
          el('time', { datetime: n.at, title: fullTime(n.at), text: shortTime(n.at) })),
        el('span', { className: 'note-text', text: n.text })));
    }
  }

  function renderHistory(events) {
    if (unchanged(els.history, events)) return;
    clear(els.history);
    els.historyTitle.textContent = `工单记录（${events.length}）`;
    for (const e of events.slice().reverse()) {
      els.history.append(el('li', null,
        el('time', { datetime: e.at, title: fullTime(e.at), text: shortTime(e.at) }),
        el('span', { className: 'h-kind', text: EVENT_KINDS[e.kind] || e.kind }),
        el('span', { className: 'h-actor muted', text: actorLabel(e.actor) })));
    }
  }

  function renderCallback(d) {
    const has = !!d.has_callback_phone;
    els.callbackCard.hidden = !has;
    if (!has) return;
    const phone = state.phones.get(d.id);
    const allowed = mine(d);
    els.revealPhone.disabled = !allowed;
    els.revealPhone.hidden = !!phone;
    els.callbackHint.textContent = phone ? '' : allowed
      ? '用户留下了回拨电话。查看会被记录（审计）。'
      : '用户留下了回拨电话。接单后可查看，查看会被记录（审计）。';
    els.callbackHint.hidden = !!phone;
    if (unchanged(els.phoneBox, phone || '')) return;
    clear(els.phoneBox);
    els.phoneBox.hidden = !phone;
    if (phone) {
      els.phoneBox.append(
        el('a', { className: 'phone-number mono', href: `tel:${phone}`, 'data-hc': 'phone-number', text: phone }),
        el('span', { className: 'muted small', text: '本次查看已记录在工单历史和审计日志中。' }));
    }
  }

  // --- actions --------------------------------------------------------------------------------
  function busy(button, on) {
    button.dataset.busy = on ? 'true' : '';
    button.setAttribute('aria-busy', on ? 'true' : 'false');
    if (on) button.disabled = true;
  }

  async function guarded(id, fn) {
    try {
      return await fn();
    } catch (err) {
      if (err.status === 401) return null;
      if (err.status === 409 && (err.code === 'already_claimed' || err.code === 'not_holder')) {
        state.conflict.set(id, ERRORS[err.code]);
        if (state.detail && state.detail.id === id) renderControls(state.detail);
        announce(ERRORS[err.code]);
        loadDetail(id, true);
      } else {
        toast(errorText(err));
        if (err.status === 409) loadDetail(id, true);
      }
      return null;
    }
  }

  async function claim(ev) {
    const byPointer = !!(ev && ev.type === 'click' && ev.detail > 0);
    const d = state.detail;
    if (!d || els.claim.disabled) return;
    const id = d.id;
    busy(els.claim, true);
    const t = await guarded(id, () => api('POST', ticketPath(id, '/claim')));
    busy(els.claim, false);
    if (t) {
      state.claimedHere.add(id);
      if (!state.me.name && t.claimed_by) state.me.name = t.claimed_by;
      if (state.me.id === null && typeof t.claimed_by_id === 'number') state.me.id = t.claimed_by_id;
      upsert(t);
      announce(`已接单 ${id}`);
      loadDetail(id, true);
      if (byPointer && state.selectedId === id) els.reply.focus();
    } else if (state.detail) {
      renderControls(state.detail);
    }
  }

  async function unclaim() {
    const d = state.detail;
    if (!d || els.unclaim.disabled) return;
    const id = d.id;
    busy(els.unclaim, true);
    const t = await guarded(id, () => api('POST', ticketPath(id, '/unclaim')));
    busy(els.unclaim, false);
    if (t) {
      state.claimedHere.delete(id);
      upsert(t);
      announce(`工单 ${id} 已退回队列`);
      loadDetail(id, true);
    } else if (state.detail) {
      renderControls(state.detail);
    }
  }

  async function send(ev) {
    if (ev) ev.preventDefault();
    const d = state.detail;
    if (!d || els.replySend.disabled) return;
    const text = els.reply.value.trim();
    if (!text) {
      els.replyHint.textContent = '请输入回复内容。';
      els.reply.focus();
      return;
    }
    const id = d.id;
    busy(els.replySend, true);
    const out = await guarded(id, () => api('POST', ticketPath(id, '/messages'), { text }));
    busy(els.replySend, false);
    if (out) {
      if (state.selectedId === id) {
        els.reply.value = '';
        state.drafts.delete(id);
        appendTranscript({ from: 'agent', text: out.text, at: out.at });
      }
      if (out.undelivered) toast(`消息已记录，但未能送达用户：${out.undelivered}`, 'warn');
      if (out.ticket) upsert(out.ticket);
      refreshSoon(id);
    }
    if (state.detail) renderControls(state.detail);
  }

  async function addNote(ev) {
    if (ev) ev.preventDefault();
    const d = state.detail;
    if (!d) return;
    const text = els.note.value.trim();
    els.noteError.hidden = true;
    if (!text) {
      els.noteError.textContent = '请输入备注内容。';
      els.noteError.hidden = false;
      els.note.focus();
      return;
    }
    const id = d.id;
    busy(els.noteAdd, true);
    const note = await guarded(id, () => api('POST', ticketPath(id, '/notes'), { text }));
    busy(els.noteAdd, false);
    els.noteAdd.disabled = false;
    if (note && state.detail && state.detail.id === id) {
      els.note.value = '';
      state.detail.notes = (state.detail.notes || []).concat([note]);
      renderNotes(state.detail.notes);
      announce('备注已添加');
      refreshSoon(id);
    }
  }

  function openResolve() {
    const d = state.detail;
    if (!d || els.resolve.disabled) return;
    els.resolveTicket.textContent = d.id;
    els.resolutionError.hidden = true;
    els.resolution.removeAttribute('aria-invalid');
    els.resolveDialog.dataset.ticketId = d.id;
    els.resolveDialog.showModal();
    els.resolution.focus();
  }

  async function confirmResolve(ev) {
    if (ev) ev.preventDefault();
    const id = els.resolveDialog.dataset.ticketId;
    const text = els.resolution.value.trim();
    if (!text) {
      els.resolutionError.textContent = '请填写处理结果：它会发送给用户。';
      els.resolutionError.hidden = false;
      els.resolution.setAttribute('aria-invalid', 'true');
      els.resolution.focus();
      return;
    }
    busy(els.resolveConfirm, true);
    let t = null;
    try {
      t = await api('POST', ticketPath(id, '/resolve'), { resolution: text });
    } catch (err) {
      if (err.status !== 401) {
        els.resolutionError.textContent = errorText(err);
        els.resolutionError.hidden = false;
        if (err.status === 409) {
          if (err.code === 'already_claimed' || err.code === 'not_holder') state.conflict.set(id, ERRORS[err.code]);
          loadDetail(id, true);
        }
      }
    }
    busy(els.resolveConfirm, false);
    els.resolveConfirm.disabled = false;
    if (t) {
      els.resolution.value = '';
      els.resolveDialog.close();
      state.drafts.delete(id);
      upsert(t);
      toast(`工单 ${id} 已解决，已请用户评价。`, 'ok');
      announce(`工单 ${id} 已解决`);
      loadDetail(id, true);
      els.resolve.focus();
    }
  }

  function openReveal() {
    const d = state.detail;
    if (!d || els.revealPhone.disabled) return;
    els.revealDialog.dataset.ticketId = d.id;
    els.revealDialog.showModal();
    els.revealCancel.focus();
  }

  async function confirmReveal(ev) {
    if (ev) ev.preventDefault();
    const id = els.revealDialog.dataset.ticketId;
    els.revealDialog.close();
    const out = await guarded(id, () => api('POST', ticketPath(id, '/reveal-phone')));
    if (!out) return;
    if (!out.phone) {
      toast('该工单没有可显示的回拨电话。', 'warn');
      return;
    }
    state.phones.set(id, out.phone);
    if (state.detail && state.detail.id === id) renderCallback(state.detail);
    announce('回拨电话已显示，本次查看已记录。');
    refreshSoon(id);
  }

  // --- the live stream ----------------------------------------------------------------------------
  function setConn(kind) {
    els.conn.dataset.state = kind;
    els.connText.textContent = { live: '实时更新中', connecting: '正在连接…', reconnecting: '连接中断，正在重连…' }[kind] || kind;
  }

  function startStream() {
    const gen = ++state.streamGen;
    if (state.streamCtrl) state.streamCtrl.abort();
    runStream(gen);
  }

  async function runStream(gen) {
    let attempt = 0;
    let first = true;
    while (state.token && gen === state.streamGen) {
      const ctrl = new AbortController();
      state.streamCtrl = ctrl;
      setConn(first ? 'connecting' : 'reconnecting');
      try {
        const q = state.lastEventId !== null ? `?after=${encodeURIComponent(state.lastEventId)}` : '';
        const resp = await fetch(`${API}/stream${q}`, {
          headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
          cache: 'no-store', credentials: 'omit', signal: ctrl.signal,
        });
        if (resp.status === 401) {
          if (gen === state.streamGen) signOut('登录已失效，请重新输入坐席令牌。');
          return;
        }
        if (!resp.ok || !resp.body) throw new Error(`stream ${resp.status}`);
        setConn('live');
        attempt = 0;
        if (!first) {
          // Back after a gap: the list and the open ticket as they are now.
          loadQueue();
          if (state.selectedId) loadDetail(state.selectedId, true);
        } else if (state.lastEventId === null) {
          // The stream's cursor is fixed now: a list read after it misses nothing.
          loadQueue();
        }
        first = false;
        await readStream(resp.body, ctrl, gen);
      } catch (e) {
        if (gen !== state.streamGen) return;
      }
      if (gen !== state.streamGen || !state.token) return;
      first = false;
      setConn('reconnecting');
      const delay = Math.min(30000, 1000 * 2 ** attempt) * (0.6 + Math.random() * 0.4);
      attempt = Math.min(attempt + 1, 6);
      await new Promise((resolve) => {
        state.wake = resolve;             // back online: try at once
        setTimeout(resolve, navigator.onLine === false ? 30000 : delay);
      });
      state.wake = null;
    }
  }

  async function readStream(body, ctrl, gen) {
    const reader = body.getReader();
    const decoder = new TextDecoder('utf-8');
    let buffer = '';
    let data = [];
    let id = null;
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== state.streamGen) break;
        arm();
        buffer += decoder.decode(value, { stream: true });
        // Lines end with CRLF, LF or CR; a CR at the very end may be half of a CRLF: keep it.
        const parts = buffer.split(/\r\n|\n|\r(?!$)/);
        buffer = parts.pop();
        for (const line of parts) {
          if (line === '') {
            if (data.length) {
              if (id !== null) state.lastEventId = id;
              dispatch(data.join('\n'));
            }
            data = [];
            id = null;
            continue;
          }
          if (line[0] === ':') continue;             // ": connected", ": ping"
          const colon = line.indexOf(':');
          const field = colon === -1 ? line : line.slice(0, colon);
          let val = colon === -1 ? '' : line.slice(colon + 1);
          if (val[0] === ' ') val = val.slice(1);
          if (field === 'data') data.push(val);
          else if (field === 'id' && !val.includes('\0')) id = val;
        }
      }
    } finally {
      clearTimeout(idle);
      reader.cancel().catch(() => { /* aborted or closed already */ });
    }
  }

  function dispatch(raw) {
    let ev;
    try {
      ev = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (!ev || typeof ev !== 'object') return;
    const t = ev.ticket;
    const id = ev.ticket_id || (t && t.id);
    if (t) upsert(t);
    const selected = state.selectedId === id;
    switch (ev.kind) {
      case 'created':
        if (t && matches(t)) {
          announce(`新工单 ${id}：${categoryLabel(t.category)}，${t.summary || ''}`);
        } else {
          announce(`新工单 ${id}`);
        }
        flashTitle(id);
        beep('ticket');
        break;
      case 'claimed':
        if (selected && t && heldByOther(t)) announce(`工单 ${id} 已被 ${t.claimed_by || '其他坐席'} 接单`);
        break;
      case 'user_message':
        if (selected) {
          appendTranscript({ from: 'user', text: ev.text || '', at: ev.at });
        } else {
          state.unread.add(id);
          const ref = rowRefs.get(id);
          if (ref) ref.unread.hidden = false;
        }
        announce(`工单 ${id} 用户新消息：${ev.text || ''}`);
        if (!selected || document.hidden) beep('message');
        break;
      case 'resolved':
        if (selected) announce(`工单 ${id} 已解决`);
        break;
      default:
        break;
    }
    if (selected && ev.kind !== 'user_message') refreshSoon(id);
  }

  // --- keyboard ---------------------------------------------------------------------------------
  function typing(target) {
    if (!target || !(target instanceof Element)) return false;
    if (target.isContentEditable) return true;
    const tag = target.tagName;
    if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
    if (tag === 'INPUT') return !['button', 'submit', 'checkbox', 'radio', 'reset'].includes(target.type);
    return false;
  }

  function move(step) {
    if (!state.order.length) return;
    let i = state.order.indexOf(state.selectedId);
    if (i === -1) i = step > 0 ? 0 : state.order.length - 1;
    else i = Math.max(0, Math.min(state.order.length - 1, i + step));
    const id = state.order[i];
    open(id);
    const ref = rowRefs.get(id);
    if (ref) ref.a.focus();
  }

  function onKey(e) {
    if (!state.token) return;
    const dialogOpen = document.querySelector('dialog[open]');
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      if (e.target === els.reply) { e.preventDefault(); send(); }
      else if (e.target === els.note) { e.preventDefault(); addNote(); }
      else if (e.target === els.resolution) { e.preventDefault(); confirmResolve(); }
      return;
    }
    if (e.key === 'Escape') {
      if (!dialogOpen && typing(e.target)) e.target.blur();
      return;
    }
    if (dialogOpen || typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const key = e.key;
    let done = true;
    if (key === 'j' || key === 'ArrowDown' && e.target.classList && e.target.classList.contains('row')) move(1);
    else if (key === 'k' || key === 'ArrowUp' && e.target.classList && e.target.classList.contains('row')) move(-1);
    else if (key === '?') els.helpDialog.showModal();
    else if (key === '/') els.statusFilter.focus();
    else if (!state.detail) done = false;
    else if (key === 'c') claim();
    else if (key === 'u') unclaim();
    else if (key === 'e') openResolve();
    else if (key === 'r') { if (!els.reply.disabled) els.reply.focus(); }
    else if (key === 'n') els.note.focus();
    else if (/^[1-9]$/.test(key)) useSuggestion(Number(key) - 1);
    else done = false;
    if (done) e.preventDefault();
  }

  // --- wiring ---------------------------------------------------------------------------------
  function init() {
    const ids = {
      live: 'live', toast: 'toast', tools: 'tools', conn: 'conn', connText: 'conn-text', meName: 'me-name',
      soundToggle: 'sound-toggle', helpOpen: 'help-open', signOut: 'sign-out', signin: 'signin',
      signinForm: 'signin-form', token: 'token', signinError: 'signin-error', signinBtn: 'signin-btn', app: 'app',
      queue: 'queue', queueEmpty: 'queue-empty', queueCount: 'queue-count', statusFilter: 'status-filter',
      categoryFilter: 'category-filter', ticketEmpty: 'ticket-empty', ticket: 'ticket', back: 'back', tId: 't-id',
      tStatus: 't-status', tCategory: 't-category', tSla: 't-sla', tMeta: 't-meta', claim: 'claim',
      unclaim: 'unclaim', resolve: 'resolve', claimedBanner: 'claimed-banner', resolvedBanner: 'resolved-banner',
      transcript: 'transcript', replyForm: 'reply-form', reply: 'reply', replyHint: 'reply-hint',
      replySend: 'reply-send', findings: 'findings', account: 'account', suggestions: 'suggestions',
      callbackCard: 'callback-card', callbackHint: 'callback-hint', revealPhone: 'reveal-phone',
      phoneBox: 'phone-box', notes: 'notes', noteForm: 'note-form', note: 'note', noteError: 'note-error',
      noteAdd: 'note-add', historyBox: 'history-box', historyTitle: 'history-title', history: 'history',
      resolveDialog: 'resolve-dialog', resolveForm: 'resolve-form', resolveTicket: 'resolve-ticket',
      resolution: 'resolution', resolutionError: 'resolution-error', resolveCancel: 'resolve-cancel',
      resolveConfirm: 'resolve-confirm', revealDialog: 'reveal-dialog', revealForm: 'reveal-form',
      revealCancel: 'reveal-cancel', revealConfirm: 'reveal-confirm', helpDialog: 'help-dialog',
      helpClose: 'help-close',
    };
    for (const [k, id] of Object.entries(ids)) els[k] = $(id);

    const seen = new Set();
    for (const [code, label] of Object.entries(CATEGORIES)) {
      const text = CATEGORY_DETAIL[code] || label;
      if (seen.has(code)) continue;
      seen.add(code);
      els.categoryFilter.append(el('option', { value: code, text }));
    }

    let stored = null;
    try { stored = localStorage.getItem(SOUND_KEY); } catch (e) { stored = null; }
    state.sound = stored !== 'off';
    paintSound();

    els.signinForm.addEventListener('submit', onSignIn);
    els.signOut.addEventListener('click', () => signOut());
    els.soundToggle.addEventListener('click', () => {
      state.sound = !state.sound;
      try { localStorage.setItem(SOUND_KEY, state.sound ? 'on' : 'off'); } catch (e) { /* private mode */ }
      paintSound();
      if (state.sound) audioContext();
      announce(state.sound ? '提示音已打开' : '提示音已关闭');
    });
    els.helpOpen.addEventListener('click', () => els.helpDialog.showModal());
    els.helpClose.addEventListener('click', () => els.helpDialog.close());
    els.statusFilter.addEventListener('change', onFilter);
    els.categoryFilter.addEventListener('change', onFilter);
    els.back.addEventListener('click', () => {
      saveDraft();
      const was = state.selectedId;
      if (location.hash) history.replaceState(null, '', location.pathname);
      select(null);
      const ref = rowRefs.get(was) || (state.order.length ? rowRefs.get(state.order[0]) : null);
      if (ref) ref.a.focus({ preventScroll: true });
    });
    els.claim.addEventListener('click', claim);
    els.unclaim.addEventListener('click', unclaim);
    els.resolve.addEventListener('click', openResolve);
    els.replyForm.addEventListener('submit', send);
    els.reply.addEventListener('input', () => { if (state.selectedId) saveDraft(); });
    els.noteForm.addEventListener('submit', addNote);
    els.resolveForm.addEventListener('submit', confirmResolve);
    els.resolveCancel.addEventListener('click', () => els.resolveDialog.close());
    els.revealPhone.addEventListener('click', openReveal);
    els.revealForm.addEventListener('submit', confirmReveal);
    els.revealCancel.addEventListener('click', () => els.revealDialog.close());
    // The network going away ends the stream at once (a half-open connection could otherwise
    // look alive); coming back reconnects at once, resuming after the last event.
    window.addEventListener('offline', () => {
      if (state.token && state.streamCtrl) state.streamCtrl.abort();
    });
    window.addEventListener('online', () => {
      if (state.token && state.wake) state.wake();
    });
    window.addEventListener('hashchange', route);
    window.addEventListener('popstate', route);
    document.addEventListener('keydown', onKey);
    // Any sign of the agent being here ends the title flash (and unlocks the audio).
    const present = () => {
      if (document.visibilityState === 'visible' && document.hasFocus()) stopFlash();
      if (state.sound && state.audio && state.audio.state === 'suspended') state.audio.resume().catch(() => {});
    };
    document.addEventListener('pointerdown', present, true);
    document.addEventListener('keydown', present, true);

    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      els.signin.hidden = false;
      els.token.focus();
      return;
    }
    els.signin.hidden = true;
    checkToken(token).then((me) => startApp(token, me)).catch((err) => {
      if (err.status === 401) signOut('登录已失效，请重新输入坐席令牌。');
      else {
        // The server is away for a moment: keep the token, let the agent retry.
        els.signin.hidden = false;
        els.token.value = token;
        signinError(errorText(err));
      }
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
