"""Alipay: the open platform's protocol, without I/O policy (routes, storage and the inbox wire it).

    sign      RSA2 keys and signatures, notification variants, gateway-response verification
    gateway   AlipayGateway: signed calls (oauth.token, 生活号 custom.send), verified answers
    notify    生活号 message-gateway notifications: decode, parse, dedupe, the signed answers

tools/fake_alipay.py is the local stand-in for the gateway that tests and local runs use.
"""
