"""WeChat (mini-program customer-service messages, official-account messages): pure protocol
modules, no routes or storage.

    crypto     signatures (URL check, plaintext pushes, msg_signature) and the AES safe mode
    messages   a push's body (XML or JSON) to fields and a Push, dedupe keys, the passive reply
    api        the customer-service API: access token (cached, one refresher), send_text, typing,
               long texts split, buttons as numbered choices

tools/fake_wechat.py stands in for api.weixin.qq.com in tests and on a laptop.
"""
