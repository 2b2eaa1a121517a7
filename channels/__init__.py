"""The channels that push (WeChat, Alipay): their protocols, the durable inbox, the links to accounts."""
