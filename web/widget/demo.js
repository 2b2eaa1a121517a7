/* The demo page around the widget: demo sign-in (only when GET /api/v1/demo/accounts answers 200)
 * and the page's own "ask" buttons. Talks to the widget only through window.HCWidget. */
(function () {
  'use strict';
  var LABEL = 'hc-demo:label';

  function widget(fn) {
    if (window.HCWidget) fn(window.HCWidget);
    else window.addEventListener('hcwidget:ready', function () { fn(window.HCWidget); }, { once: true });
  }
  function remember(label) {
    try { if (label) localStorage.setItem(LABEL, label); else localStorage.removeItem(LABEL); } catch (e) { /* private mode */ }
  }
  function remembered() { try { return localStorage.getItem(LABEL); } catch (e) { return null; } }

  document.addEventListener('DOMContentLoaded', function () {
    var box = document.getElementById('demo-box');
    var select = document.getElementById('demo-account');
    var out = document.getElementById('demo-signout');
    var status = document.getElementById('demo-status');

    document.getElementById('ask').addEventListener('click', function () { widget(function (w) { w.open(); }); });
    Array.prototype.forEach.call(document.querySelectorAll('[data-ask]'), function (b) {
      b.addEventListener('click', function () { widget(function (w) { w.open(); w.send(b.getAttribute('data-ask')); }); });
    });

    function show(signedIn, note) {
      out.hidden = !signedIn;
      var label = remembered();
      status.textContent = note || (signedIn ? '已登录:' + (label || '演示账户') : '当前未登录(匿名咨询)');
      if (!signedIn) select.value = '';
    }

    fetch('/api/v1/demo/accounts', { cache: 'no-store' }).then(function (r) {
      if (r.status !== 200) return null;
      return r.json();
    }).then(function (j) {
      if (!j || !Array.isArray(j.accounts)) return;
      j.accounts.forEach(function (a) {
        var o = document.createElement('option');
        o.value = a.user_id;
        o.textContent = a.label || a.user_id;
        select.appendChild(o);
      });
      box.hidden = false;
      widget(function (w) { show(w.isSignedIn()); });
    }, function () { /* no demo control without the demo API */ });

    select.addEventListener('change', function () {
      var id = select.value;
      if (!id) return;
      var label = select.options[select.selectedIndex].textContent;
      status.textContent = '正在登录…';
      fetch('/api/v1/demo/sessions', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ user_id: id })
      }).then(function (r) {
        if (!r.ok) throw new Error('sign-in ' + r.status);
        return r.json();
      }).then(function (j) {
        remember(label);
        widget(function (w) { w.signIn(j.token); w.open(); });
      }).catch(function () {
        show(false, '登录失败,请稍后重试');
      });
    });
    out.addEventListener('click', function () { widget(function (w) { w.signOut(); }); });

    window.addEventListener('hcwidget:auth', function (e) {
      var d = e.detail || {};
      if (!d.signedIn) remember(null);
      show(d.signedIn, d.reason === 'expired' ? '登录已过期,请重新选择演示账号' : null);
    });
  });
})();
