"""Planning a campaign before paying for it: a stratified pilot sample and the
projection of duration and credits from the tiles that ran."""
