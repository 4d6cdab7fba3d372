"""Who may log in and as whom: PAM logins, the Principal they yield, login throttling."""
