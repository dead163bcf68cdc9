"""The loyalty domain: members, principals and (later) points, coupons, tiers and campaigns.

Nothing in this package imports litestar or ``api``; the HTTP layer and the jobs call in here.
"""
